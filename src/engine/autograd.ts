// Reverse-mode autograd. Each op that may need a gradient calls `record` with a backward closure; the
// closure receives the upstream gradient and the tensors it asked to save (kept alive by the node), and
// returns one gradient per input (null where none). `backward()` walks the nodes in reverse topological
// order, accumulates gradients, stores leaf gradients in `.grad` and frees the graph.

import { add } from '../kernels/elementwise.ts';
import { GradNode, Tensor, keep, shapeStr, tidy } from './tensor.ts';

let gradEnabled = true;

/** Runs `fn` without recording autograd history. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

export type Backward = (grad: Tensor, saved: Tensor[]) => (Tensor | null | undefined)[];

/**
 * Attaches the backward of `op` to `out`. `inputs` are the op's differentiable inputs in the order the
 * backward returns their gradients; `saved` are tensors the backward reads (held until the graph is freed).
 */
export function record(op: string, out: Tensor, inputs: readonly (Tensor | null | undefined)[], backward: Backward, saved: readonly Tensor[] = []): Tensor {
  if (!gradEnabled || !inputs.some((t) => t?.requiresGrad)) return out;
  const edges = inputs.map((t) => (!t ? null : t.node && !t.node.released ? t.node : t.requiresGrad ? t : null));
  const shapes = inputs.map((t) => t?.shape);
  const checked: Backward = (g, s) => {
    const grads = backward(g, s);
    grads.forEach((gi, i) => {
      const want = shapes[i];
      if (gi && want && (gi.shape.length !== want.length || gi.shape.some((d, k) => d !== want[k]))) {
        throw new Error(`backward of ${op}: gradient for input ${i} has shape ${shapeStr(gi.shape)}, expected ${shapeStr(want)}`);
      }
    });
    return grads;
  };
  out.node = new GradNode(op, edges, checked as GradNode['backward'], saved.map((t) => keep(t.alias())));
  return out;
}

/**
 * Back-propagates from `root` (a scalar, or any tensor with an explicit `grad` of its shape) into the
 * `.grad` of every leaf with `requiresGrad`, accumulating into existing gradients. Frees the graph unless
 * `retainGraph`.
 */
export function backward(root: Tensor, grad?: Tensor, { retainGraph = false } = {}): void {
  if (!root.node) throw new Error(`backward(): ${root} has no autograd history (no op on a requiresGrad tensor produced it)`);
  if (root.node.released) throw new Error('backward(): the graph was already freed by an earlier backward(); pass retainGraph to reuse it');
  if (!grad && root.size !== 1) throw new Error(`backward(): root has shape ${shapeStr(root.shape)}; pass a gradient of that shape for non-scalar roots`);
  if (grad && grad.shape.join() !== root.shape.join()) {
    throw new Error(`backward(): gradient shape ${shapeStr(grad.shape)} does not match root shape ${shapeStr(root.shape)}`);
  }
  const order = topoOrder(root.node);
  const grads = new Map<GradNode, Tensor>();
  grads.set(root.node, grad ? keep(grad.alias()) : keep(Tensor.fromArray(new Float32Array([1]), root.shape)));
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    for (const node of order) {
      const g = grads.get(node);
      if (!g) continue;
      grads.delete(node);
      const inputs = node.inputs;
      // Every gradient must be a tensor of its own: a backward may hand back g, a saved tensor, or one
      // tensor for two inputs, and each result is disposed or accumulated separately.
      const results = tidy(() => {
        const own = new Set<Tensor>([g, ...node.saved]);
        return node.backward!(g, node.saved).map((r) => {
          if (!r) return null;
          if (own.has(r)) return r.alias();
          own.add(r);
          return r;
        });
      });
      g.dispose();
      results.forEach((gi, i) => {
        const target = inputs[i];
        if (!gi) return;
        if (!target) return gi.dispose();
        if (target instanceof GradNode) {
          const acc = grads.get(target);
          grads.set(target, keep(acc ? accumulate(acc, gi) : gi));
        } else {
          target.grad = keep(target.grad ? accumulate(target.grad, gi) : gi);
        }
      });
    }
  } finally {
    gradEnabled = prev;
    for (const g of grads.values()) g.dispose();
    if (!retainGraph) for (const node of order) node.free();
  }
}

function accumulate(a: Tensor, b: Tensor): Tensor {
  const sum = add(a, b);
  a.dispose();
  b.dispose();
  return sum;
}

function topoOrder(root: GradNode): GradNode[] {
  const order: GradNode[] = [];
  const seen = new Set<GradNode>();
  const stack: [GradNode, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1]!;
    const [node, i] = top;
    if (i < node.inputs.length) {
      top[1]++;
      const next = node.inputs[i];
      if (next instanceof GradNode && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      stack.pop();
      order.push(node);
    }
  }
  return order.reverse();
}
