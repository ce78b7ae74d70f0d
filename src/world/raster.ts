// ShapeWorld's rasteriser: primitives given by a signed distance in pixels, anti-aliased by one rule used for
// both the picture and the ground truth. A pixel's coverage by a shape is clamp(0.5 − d, 0, 1), where d is the
// shape's signed distance (negative inside) at the pixel centre (x + 0.5, y + 0.5): a one-pixel ramp across the
// edge. An object is the union of its primitives, so its coverage A is that of the smallest distance (the
// largest primitive coverage); its colour is the primitives composited in order. The masks take a pixel for
// the object when A ≥ 0.5, i.e. exactly when the pixel centre lies inside one of its primitives (scene.ts
// adds occlusion: the nearest such object owns the pixel).

export type Rgb = readonly [number, number, number];

export type Primitive =
  /** An ellipse of radii rx, ry rotated by `angle` (radians) around its centre. */
  | { kind: 'ellipse'; cx: number; cy: number; rx: number; ry: number; angle: number; color: Rgb }
  /** A convex polygon, points as [x0, y0, x1, y1, …] in either winding. */
  | { kind: 'polygon'; points: number[]; color: Rgb }
  /** All points within r of the segment (x0, y0)–(x1, y1): limbs, masts, wheels' axles. */
  | { kind: 'capsule'; x0: number; y0: number; x1: number; y1: number; r: number; color: Rgb };

/** The signed distance of a primitive, prepared once: (x, y) in pixels → distance in pixels. */
export type Distance = (x: number, y: number) => number;

export function distanceOf(p: Primitive): Distance {
  if (p.kind === 'ellipse') {
    const { cx, cy, rx, ry } = p;
    const c = Math.cos(p.angle), s = Math.sin(p.angle);
    const ix = 1 / rx, iy = 1 / ry;
    const inner = -Math.min(rx, ry);
    // Quilez's first-order estimate (k0 − 1) · k0 / k1: exact on the axes, close enough elsewhere for a 1-px ramp.
    return (x, y) => {
      const dx = x - cx, dy = y - cy;
      const u = (dx * c + dy * s) * ix, v = (dy * c - dx * s) * iy;
      const k0 = Math.sqrt(u * u + v * v);
      const k1 = Math.sqrt(u * u * ix * ix + v * v * iy * iy);
      return k1 === 0 ? inner : (k0 * (k0 - 1)) / k1;
    };
  }
  if (p.kind === 'capsule') {
    const { x0, y0, r } = p;
    const ex = p.x1 - x0, ey = p.y1 - y0;
    const len2 = ex * ex + ey * ey || 1;
    return (x, y) => {
      const t = Math.min(1, Math.max(0, ((x - x0) * ex + (y - y0) * ey) / len2));
      const dx = x - x0 - t * ex, dy = y - y0 - t * ey;
      return Math.sqrt(dx * dx + dy * dy) - r;
    };
  }
  // Convex polygon: the distance to the nearest edge segment, negative inside (inside: on the inner side of
  // every edge line). Exact, so sharp tips (wings, beaks) are not fattened as a max of edge lines would.
  const pts = p.points;
  const n = pts.length / 2;
  let area = 0;
  for (let i = 0; i < n; i++) {
    const j = (i + 1) % n;
    area += pts[2 * i]! * pts[2 * j + 1]! - pts[2 * j]! * pts[2 * i + 1]!;
  }
  const sign = area >= 0 ? 1 : -1;
  const edges = new Float64Array(4 * n); // ax, ay, ex, ey
  for (let i = 0; i < n; i++) {
    const j = (i + 1) % n;
    edges.set([pts[2 * i]!, pts[2 * i + 1]!, pts[2 * j]! - pts[2 * i]!, pts[2 * j + 1]! - pts[2 * i + 1]!], 4 * i);
  }
  return (x, y) => {
    let d2 = Infinity, outside = false;
    for (let k = 0; k < 4 * n; k += 4) {
      const ax = edges[k]!, ay = edges[k + 1]!, ex = edges[k + 2]!, ey = edges[k + 3]!;
      const px = x - ax, py = y - ay;
      // with area > 0 (y down), the interior lies where ex·py − ey·px > 0
      if (sign * (ex * py - ey * px) < 0) outside = true;
      const t = Math.min(1, Math.max(0, (px * ex + py * ey) / (ex * ex + ey * ey || 1)));
      const dx = px - t * ex, dy = py - t * ey;
      d2 = Math.min(d2, dx * dx + dy * dy);
    }
    const d = Math.sqrt(d2);
    return outside ? d : -d;
  };
}

/** The pixel bounds [x0, y0, x1, y1) a primitive can touch (its shape plus the half-pixel ramp). */
export function boundsOf(p: Primitive): [number, number, number, number] {
  let x0: number, y0: number, x1: number, y1: number;
  if (p.kind === 'ellipse') {
    const c = Math.cos(p.angle), s = Math.sin(p.angle);
    const hx = Math.hypot(p.rx * c, p.ry * s), hy = Math.hypot(p.rx * s, p.ry * c);
    [x0, y0, x1, y1] = [p.cx - hx, p.cy - hy, p.cx + hx, p.cy + hy];
  } else if (p.kind === 'capsule') {
    [x0, y0] = [Math.min(p.x0, p.x1) - p.r, Math.min(p.y0, p.y1) - p.r];
    [x1, y1] = [Math.max(p.x0, p.x1) + p.r, Math.max(p.y0, p.y1) + p.r];
  } else {
    const xs = p.points.filter((_, i) => i % 2 === 0), ys = p.points.filter((_, i) => i % 2 === 1);
    [x0, y0, x1, y1] = [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
  }
  return [Math.floor(x0 - 1), Math.floor(y0 - 1), Math.ceil(x1 + 1), Math.ceil(y1 + 1)];
}

/** The documented anti-aliasing rule: coverage of a pixel whose centre lies at signed distance d. */
export function coverage(d: number): number {
  return d <= -0.5 ? 1 : d >= 0.5 ? 0 : 0.5 - d;
}

/** An object rasterised in its own window: premultiplied colour and coverage. */
export interface Layer {
  x0: number;
  y0: number;
  width: number;
  height: number;
  /** coverage A per pixel of the window: the largest coverage of a primitive */
  alpha: Float32Array;
  /** premultiplied RGB per pixel of the window */
  color: Float32Array;
}

/** Rasterises the union of `prims` (composited in order) within the image [0, W) × [0, H); null when off-image. */
export function rasterize(prims: readonly Primitive[], W: number, H: number): Layer | null {
  const bounds = prims.map(boundsOf);
  const x0 = Math.max(0, Math.min(...bounds.map((b) => b[0])));
  const y0 = Math.max(0, Math.min(...bounds.map((b) => b[1])));
  const x1 = Math.min(W, Math.max(...bounds.map((b) => b[2])));
  const y1 = Math.min(H, Math.max(...bounds.map((b) => b[3])));
  if (x1 <= x0 || y1 <= y0) return null;
  const width = x1 - x0, height = y1 - y0;
  const alpha = new Float32Array(width * height);
  const composite = new Float32Array(width * height); // alpha of the primitives composited in order
  const color = new Float32Array(width * height * 3);
  prims.forEach((p, k) => {
    const dist = distanceOf(p);
    const [r, g, b] = p.color;
    const [bx0, by0, bx1, by1] = bounds[k]!;
    for (let y = Math.max(y0, by0); y < Math.min(y1, by1); y++) {
      for (let x = Math.max(x0, bx0); x < Math.min(x1, bx1); x++) {
        const c = coverage(dist(x + 0.5, y + 0.5));
        if (c === 0) continue;
        const i = (y - y0) * width + (x - x0);
        alpha[i] = Math.max(alpha[i]!, c);
        composite[i] = composite[i]! * (1 - c) + c;
        color[3 * i] = color[3 * i]! * (1 - c) + r * c;
        color[3 * i + 1] = color[3 * i + 1]! * (1 - c) + g * c;
        color[3 * i + 2] = color[3 * i + 2]! * (1 - c) + b * c;
      }
    }
  });
  // the composited colour, rescaled from the composite's alpha to the union's
  for (let i = 0; i < alpha.length; i++) {
    if (composite[i] === 0) continue;
    const k = alpha[i]! / composite[i]!;
    for (let c = 0; c < 3; c++) color[3 * i + c] *= k;
  }
  return { x0, y0, width, height, alpha, color };
}

/** A hash of integer coordinates and a seed to [0, 1): the source of all texture noise. */
export function hash3(x: number, y: number, seed: number): number {
  let h = Math.imul(x | 0, 0x27d4eb2d) ^ Math.imul(y | 0, 0x165667b1) ^ Math.imul(seed | 0, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 15), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}

/** Smooth value noise in [0, 1) at real coordinates (lattice spacing 1). */
export function valueNoise(x: number, y: number, seed: number): number {
  const ix = Math.floor(x), iy = Math.floor(y);
  const fx = x - ix, fy = y - iy;
  const sx = fx * fx * (3 - 2 * fx), sy = fy * fy * (3 - 2 * fy);
  const a = hash3(ix, iy, seed), b = hash3(ix + 1, iy, seed);
  const c = hash3(ix, iy + 1, seed), d = hash3(ix + 1, iy + 1, seed);
  return a + (b - a) * sx + (c - a) * sy + (a - b - c + d) * sx * sy;
}

/** Two octaves of value noise, in [0, 1). */
export function fractalNoise(x: number, y: number, seed: number): number {
  return (2 * valueNoise(x, y, seed) + valueNoise(2 * x, 2 * y, seed + 1)) / 3;
}
