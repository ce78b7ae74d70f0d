// Training diffusers' AutoencoderKL as latent diffusion's first stage, without the GAN and LPIPS terms
// (no pretrained perceptual network can be had here): per micro-batch, images in [−1, 1] (flipped
// horizontally at random), z sampled from the posterior, and
//   loss = mean |x − decode(z)| + klWeight · KL(q(z|x) ‖ N(0, I)) / (C·H·W)
// which is LDM's L1 + 1e-6·KL objective (each summed per image) divided by the pixel count. After training,
// `latentScalingFactor` measures SD's scaling_factor: 1 / std of the latents of a set of images.

import { Tensor, tidy } from '../engine/tensor.ts';
import { seededRandom } from '../engine/random-cpu.ts';
import { noGrad } from '../engine/autograd.ts';
import { add, exp, mul, sub } from '../kernels/elementwise.ts';
import { l1Loss } from '../kernels/loss.ts';
import { sum } from '../kernels/reduce.ts';
import { type AutoencoderKL, autoencoderConfigJson } from '../models/autoencoder_kl.ts';
import type { Batch, TrainTask } from './trainer.ts';

/** An 8-bit RGB picture, row-major. */
export interface RgbImage {
  id: string;
  width: number;
  height: number;
  image: Uint8Array;
}

/** Pictures `indices` of `images` as [B, 3, H, W] in [−1, 1]; `flip[i]` mirrors picture i left–right. */
export function imageBatch(images: readonly RgbImage[], indices: readonly number[], flip: readonly boolean[] = []): Tensor {
  const first = images[indices[0]!]!;
  const [W, H] = [first.width, first.height];
  const hw = W * H;
  const data = new Float32Array(indices.length * 3 * hw);
  indices.forEach((k, i) => {
    const img = images[k]!;
    if (img.width !== W || img.height !== H) throw new Error(`image ${img.id} is ${img.width}×${img.height}, the batch's first ${first.id} is ${W}×${H}: training images must share a size`);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const src = 3 * (y * W + (flip[i] ? W - 1 - x : x));
        for (let c = 0; c < 3; c++) data[(i * 3 + c) * hw + y * W + x] = img.image[src + c]! / 127.5 - 1;
      }
    }
  });
  return Tensor.fromArray(data, [indices.length, 3, H, W]);
}

/** KL(N(μ, σ²) ‖ N(0, 1)) summed over everything: ½ Σ (μ² + σ² − 1 − log σ²). */
export function gaussianKl(mean: Tensor, logvar: Tensor): Tensor {
  return mul(sum(sub(add(mul(mean, mean), exp(logvar)), add(logvar, 1))), 0.5);
}

/** The trainer's task for an AutoencoderKL on `images` (its parameters become trainable). */
export function autoencoderTask(vae: AutoencoderKL, images: readonly RgbImage[], { klWeight = 1e-6 }: { klWeight?: number } = {}): TrainTask {
  if (!(klWeight >= 0)) throw new Error(`train vae: klWeight must be ≥ 0, got ${klWeight}`);
  vae.requireGrad();
  return {
    kind: 'autoencoder-kl',
    model: vae,
    size: images.length,
    describe: (b) => b.indices.map((k) => images[k]!.id).join(', '),
    metadata: () => ({ config: JSON.stringify(autoencoderConfigJson(vae.config)), kl_weight: String(klWeight) }),
    loss: async (b: Batch) => tidy(() => {
      const rand = seededRandom(b.seed);
      const x = imageBatch(images, b.indices, b.indices.map(() => rand() < 0.5));
      const posterior = vae.encode(x);
      const recon = vae.decode(vae.sample(posterior, { seed: Math.floor(rand() * 2 ** 31) }));
      const perPixel = x.size / x.shape[0]!;
      return add(l1Loss(recon, x), mul(gaussianKl(posterior.mean, posterior.logvar), klWeight / (x.shape[0]! * perPixel)));
    }),
  };
}

/** SD's scaling_factor for a trained VAE: 1 / std of the posterior means of `images` (in batches of `batch`). */
export async function latentScalingFactor(vae: AutoencoderKL, images: readonly RgbImage[], batch = 16): Promise<number> {
  let [n, s, s2] = [0, 0, 0];
  for (let i = 0; i < images.length; i += batch) {
    const indices = Array.from({ length: Math.min(batch, images.length - i) }, (_, k) => i + k);
    const mean = noGrad(() => tidy(() => vae.encode(imageBatch(images, indices)).mean));
    for (const v of await mean.toArray()) {
      n++;
      s += v;
      s2 += v * v;
    }
    mean.dispose();
  }
  const variance = (s2 - (s * s) / n) / (n - 1);
  return 1 / Math.sqrt(variance);
}
