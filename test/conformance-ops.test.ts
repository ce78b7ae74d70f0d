// Every case of ../shared/conformance/ops: forward output and every input gradient, within the case's tol.
// A case whose op we do not implement fails (it is never skipped).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { backward } from '../src/engine/autograd.ts';
import type { Tensor } from '../src/engine/tensor.ts';
import { assertTensorClose, conformance, conformanceDir, readJson } from './helpers.ts';
import { opAdapters } from './ops/registry.ts';

interface OpCase {
  name: string;
  op: string;
  args: Record<string, unknown>;
  inputs: Record<string, string>;
  output: string;
  tol: number;
  grad_out?: string;
  grads?: Record<string, string>;
}

const io = conformance('ops');
const { cases } = await readJson<{ cases: OpCase[] }>(`${conformanceDir}/ops/cases.json`);

for (const c of cases) {
  test(`ops/${c.name} (${c.op})`, async () => {
    const adapter = opAdapters[c.op];
    assert.ok(adapter, `no implementation registered for op '${c.op}'`);
    const inputs: Record<string, Tensor> = {};
    for (const [k, key] of Object.entries(c.inputs)) {
      inputs[k] = io.get(key);
      if (c.grads?.[k]) inputs[k].requiresGrad = true;
    }
    const out = adapter!(inputs, c.args);
    const ref = io.get(c.output);
    // integer references (argmax) compare exactly through the same rule
    await assertTensorClose(out, ref, c.tol, `${c.name} forward`);
    if (c.grad_out) {
      // scalar losses: the reference stores dL/dy as shape [1] for a 0-d output
      const g = io.get(c.grad_out);
      const upstream = g.alias(out.shape);
      backward(out, upstream);
      for (const [k, key] of Object.entries(c.grads ?? {})) {
        const want = io.get(key);
        assert.ok(inputs[k]!.grad, `${c.name}: no gradient reached input '${k}'`);
        await assertTensorClose(inputs[k]!.grad!, want, c.tol, `${c.name} grad ${k}`);
        want.dispose();
      }
      upstream.dispose();
      g.dispose();
    }
    out.dispose();
    ref.dispose();
    for (const t of Object.values(inputs)) t.dispose();
  });
}


test.run();
