// Attention capture: the attention probabilities softmax(QKᵀ/√d) of a UNet's attention layers, requested per
// forward (or per sampling run of many forwards) and aggregated on the GPU as each layer produces them, so
// memory stays flat however many steps run. Layers that are not selected cost nothing.

import { deviceInfo } from '../engine/device.ts';
import { Tensor, keep, shapeStr, tidy } from '../engine/tensor.ts';
import { add, affine } from '../kernels/elementwise.ts';
import { sum } from '../kernels/reduce.ts';
import { concat, reshape, slice } from '../kernels/shape.ts';

export type AttentionKind = 'self' | 'cross';

export interface AttentionCaptureOptions {
  /** Capture cross-attention (attn2: queries = pixels, keys = text tokens). Default true. */
  cross?: boolean;
  /** Capture self-attention (attn1: keys = pixels of the same level). Default false. */
  self?: boolean;
  /** Selects layers by module name (`down_blocks.0.attentions.0.transformer_blocks.0.attn2`); default all. */
  layers?: (name: string) => boolean;
  /** Selects layers by the height of their feature map (a 64×64 latent has levels 64, 32, 16, 8); default all. */
  resolutions?: readonly number[];
  /** Head indices to keep (summed in 'sum' mode); default all heads. */
  heads?: readonly number[];
  /**
   * 'sum' (default): one map per kind and resolution, key `cross:16x16`, [batch, Lq, Lk] summed over the chosen
   * heads, layers and forwards. 'per-layer': one map per layer, key = module name, [batch, heads, Lq, Lk]
   * summed over forwards only. 'graph': every forward of each selected layer, all heads, [batch, heads, Lq, Lk],
   * computed by differentiable ops and left in the autograd graph, for a loss on attention (`graphMaps()`).
   */
  mode?: 'sum' | 'per-layer' | 'graph';
  /**
   * The largest map one layer may give, in bytes (all its captured heads, before summing into the others); a
   * layer over it fails naming itself. Default, and never more than, the device's storage-binding limit (a
   * larger map could not be bound to a kernel).
   */
  maxMapBytes?: number;
}

/** One aggregated map. `mean()` of the capture divides `sum` by `count`. */
export interface CapturedMap {
  kind: AttentionKind;
  /** Feature-map size of the layers: Lq = height · width. */
  height: number;
  width: number;
  /** Module names that contributed. */
  layers: string[];
  /** 'sum': [batch, Lq, Lk]; 'per-layer': [batch, heads, Lq, Lk]. Owned by the capture. */
  sum: Tensor;
  /** Number of [Lq, Lk] maps per batch element summed into each entry (heads × layers × forwards, or forwards). */
  count: number;
}

/** One layer's probabilities of one forward in 'graph' mode (owned by the capture, part of the autograd graph). */
export interface GraphMap {
  name: string;
  kind: AttentionKind;
  height: number;
  width: number;
  /** [batch, heads, Lq, Lk] */
  probs: Tensor;
}

/** Where an attention layer reports to: its module name and feature-map size. */
export interface CaptureContext {
  capture: AttentionCapture;
  height: number;
  width: number;
}

export class AttentionCapture {
  readonly options: Required<Omit<AttentionCaptureOptions, 'layers' | 'heads' | 'resolutions' | 'maxMapBytes'>> & AttentionCaptureOptions;
  readonly #maps = new Map<string, CapturedMap>();
  readonly #graph: GraphMap[] = [];

  constructor(options: AttentionCaptureOptions = {}) {
    this.options = { cross: true, self: false, mode: 'sum', ...options };
    if (!['sum', 'per-layer', 'graph'].includes(this.options.mode)) {
      throw new Error(`AttentionCapture: mode must be 'sum', 'per-layer' or 'graph', got '${String(this.options.mode)}'`);
    }
    if (this.options.mode === 'graph' && this.options.heads) throw new Error('AttentionCapture: graph mode keeps every head (no heads option)');
    const max = this.options.maxMapBytes;
    if (max !== undefined && !(Number.isInteger(max) && max > 0)) {
      throw new Error(`AttentionCapture: maxMapBytes must be a positive integer, got ${String(max)}`);
    }
  }

  /** Keys of the maps captured so far. */
  keys(): string[] {
    return [...this.#maps.keys()];
  }

  /** The map under `key` (see `mode`), or undefined. */
  get(key: string): CapturedMap | undefined {
    return this.#maps.get(key);
  }

  entries(): [string, CapturedMap][] {
    return [...this.#maps];
  }

  /** The average map under `key` (sum / count), a new tensor owned by the caller. */
  mean(key: string): Tensor {
    const m = this.#maps.get(key);
    if (!m) throw new Error(`AttentionCapture: no map '${key}' (captured: ${this.keys().join(', ') || 'none'})`);
    return affine(m.sum, 1 / m.count);
  }

  /**
   * The mean cross-attention map of text token `token` for batch element `batch` from a 'sum'-mode entry
   * (key `cross:HxW`), as [height, width]: where in the image that token was looked at. A new tensor.
   */
  tokenMap(key: string, token: number, batch = 0): Tensor {
    const m = this.#maps.get(key);
    if (!m || m.kind !== 'cross' || m.sum.rank !== 3) throw new Error(`AttentionCapture.tokenMap: '${key}' is not a 'sum'-mode cross-attention map (captured: ${this.keys().join(', ') || 'none'})`);
    const [B, , Lk] = m.sum.shape as [number, number, number];
    if (!Number.isInteger(token) || token < 0 || token >= Lk) throw new Error(`AttentionCapture.tokenMap: token ${token} is outside 0…${Lk - 1}`);
    if (!Number.isInteger(batch) || batch < 0 || batch >= B) throw new Error(`AttentionCapture.tokenMap: batch ${batch} is outside 0…${B - 1}`);
    return tidy(() => reshape(affine(slice(slice(m.sum, 0, batch, batch + 1), 2, token, token + 1), 1 / m.count), [m.height, m.width]));
  }

  /** 'graph' mode: each selected layer's probabilities, one entry per forward, in the order computed. */
  graphMaps(): readonly GraphMap[] {
    return this.#graph;
  }

  /** Frees every map; the capture can be used again. */
  reset(): void {
    for (const m of this.#maps.values()) m.sum.dispose();
    this.#maps.clear();
    for (const g of this.#graph.splice(0)) g.probs.dispose();
  }

  dispose(): void {
    this.reset();
  }

  /** Whether the layer `name` of `kind` at this size is captured; its sink when so (called by Attention). */
  sink(name: string, kind: AttentionKind, ctx: CaptureContext, heads: number): LayerSink | undefined {
    if (this.options.mode === 'graph' || !this.selects(name, kind, ctx)) return undefined;
    const selected = this.options.heads ?? [...Array(heads).keys()];
    for (const h of selected) {
      if (!Number.isInteger(h) || h < 0 || h >= heads) throw new Error(`AttentionCapture: head ${h} does not exist in ${name} (${heads} heads)`);
    }
    return new LayerSink(this, name, kind, ctx, selected);
  }

  /** Whether the layer `name` of `kind` at this size is captured. */
  selects(name: string, kind: AttentionKind, ctx: CaptureContext): boolean {
    const o = this.options;
    return (kind === 'cross' ? o.cross : o.self) && (!o.layers || o.layers(name)) && (!o.resolutions || o.resolutions.includes(ctx.height));
  }

  /** 'graph' mode: keeps one forward's probabilities [B, heads, Lq, Lk] of layer `name` (called by Attention). */
  addGraph(name: string, kind: AttentionKind, ctx: CaptureContext, probs: Tensor): void {
    this.#graph.push({ name, kind, height: ctx.height, width: ctx.width, probs: keep(probs) });
  }

  /** Adds one layer's contribution (called by LayerSink.end). */
  accumulate(key: string, name: string, kind: AttentionKind, ctx: CaptureContext, value: Tensor, count: number): void {
    const m = this.#maps.get(key);
    if (!m) {
      this.#maps.set(key, { kind, height: ctx.height, width: ctx.width, layers: [name], sum: keep(value), count });
      return;
    }
    if (m.sum.shape.some((d, k) => d !== value.shape[k])) {
      throw new Error(`AttentionCapture: map '${key}' is ${shapeStr(m.sum.shape)} but ${name} gives ${shapeStr(value.shape)} (batch or tokens changed between forwards; reset() first)`);
    }
    const next = keep(add(m.sum, value));
    m.sum.dispose();
    value.dispose();
    m.sum = next;
    m.count += count;
    if (!m.layers.includes(name)) m.layers.push(name);
  }
}

/**
 * Collects one layer's probabilities during one forward, block by block of queries as the attention computes
 * them (scaledDotProductAttention's `onProbs`), then adds them.
 */
export class LayerSink {
  /** Each block's selected heads (or their sum), by its first query. */
  readonly #parts = new Map<number, Tensor>();

  constructor(
    readonly capture: AttentionCapture,
    readonly name: string,
    readonly kind: AttentionKind,
    readonly ctx: CaptureContext,
    readonly heads: readonly number[],
  ) {}

  /** probs [B, H, rows, Lk] of queries start..start+rows−1. */
  add(probs: Tensor, start: number): void {
    const H = probs.shape[1]!;
    this.#parts.set(start, keep(tidy(() => {
      const picked = this.heads.length === H ? probs : concat(this.heads.map((h) => slice(probs, 1, h, h + 1)), 1);
      return this.capture.options.mode === 'sum' ? sum(picked, 1) : picked === probs ? affine(probs, 1) : picked;
    })));
  }

  /** Joins the blocks and hands the layer's map to the capture. */
  end(): void {
    const perLayer = this.capture.options.mode === 'per-layer';
    const parts = [...this.#parts.keys()].sort((a, b) => a - b).map((start) => this.#parts.get(start)!);
    this.#parts.clear();
    if (parts.length === 0) return;
    const bytes = parts.reduce((n, p) => n + p.byteLength, 0);
    const binding = deviceInfo().limits.maxStorageBufferBindingSize;
    const max = this.capture.options.maxMapBytes;
    const limit = Math.min(max ?? binding, binding);
    if (bytes > limit) {
      for (const p of parts) p.dispose();
      const which = limit < binding ? 'maxMapBytes' : 'storage-binding';
      throw new Error(`attention capture of ${this.name}: its map takes ${bytes} bytes, over the ${limit}-byte ${which} limit; deselect this layer or resolution`);
    }
    // queries are dim 2 of [B, heads, Lq, Lk] (per layer), dim 1 once heads are summed
    const value = parts.length === 1 ? parts[0]! : tidy(() => concat(parts, perLayer ? 2 : 1));
    if (parts.length > 1) for (const p of parts) p.dispose();
    const { height, width } = this.ctx;
    const key = perLayer ? this.name : `${this.kind}:${height}x${width}`;
    this.capture.accumulate(key, this.name, this.kind, this.ctx, value, perLayer ? 1 : this.heads.length);
  }
}
