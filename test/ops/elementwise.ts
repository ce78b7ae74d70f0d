import * as F from '../../src/index.ts';
import type { OpAdapter } from './registry.ts';

const unary = (op: F.UnaryOp): OpAdapter => ({ x }) => F.unary(op, x!);

export const elementwiseOps: Record<string, OpAdapter> = {
  ...Object.fromEntries((Object.keys(F.unaryOps) as F.UnaryOp[]).map((op) => [op, unary(op)])),
  pow: ({ x }, { exponent }) => F.pow(x!, exponent),
  clamp: ({ x }, { min, max }) => F.clamp(x!, min, max),
  add: ({ a, b }) => F.add(a!, b!),
  sub: ({ a, b }) => F.sub(a!, b!),
  mul: ({ a, b }) => F.mul(a!, b!),
  div: ({ a, b }) => F.div(a!, b!),
  where: ({ cond, a, b }) => F.where(cond!, a!, b!),
  sum: ({ x }, { dim, keepdim }) => F.sum(x!, dim, { keepdim }),
  mean: ({ x }, { dim, keepdim }) => F.mean(x!, dim, { keepdim }),
  max: ({ x }, { dim }) => F.max(x!, dim),
  argmax: ({ x }, { dim }) => F.argmax(x!, dim),
  concat: ({ a, b }, { dim }) => F.concat([a!, b!], dim),
  pad: ({ x }, { pad, value }) => F.pad(x!, pad, value),
  permute: ({ x }, { dims }) => F.permute(x!, dims),
  roll: ({ x }, { shifts, dims }) => F.roll(x!, shifts, dims),
};
