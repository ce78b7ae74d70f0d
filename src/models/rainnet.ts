// RainNet (Ling et al., "Region-aware Adaptive Instance Normalization for Image Harmonization", CVPR 2021;
// reference junleen/RainNet models/networks.py RainNet and UnetBlockCodec, models/normalize.py RAIN), the
// harmonizer of the Free-Mask release. A U-Net over the composite: stride-2 4×4 convolutions down (instance norm
// in the encoder), transposed convolutions up with RAIN (the foreground's features re-normalised to the
// background's statistics, region by region, from the mask), attention-gated skips at the three outer levels,
// tanh out. Harmonised = G(x, m)·m + x·(1 − m): only the pasted object changes. Module and parameter names are
// the reference's state_dict keys; ngf is configurable (64 officially).

import { Tensor, tidy } from '../engine/tensor.ts';
import { add, affine, leakyRelu, mul, sqrt, sub, div } from '../kernels/elementwise.ts';
import { groupNorm } from '../kernels/norm.ts';
import { sum } from '../kernels/reduce.ts';
import { interpolate } from '../kernels/resample.ts';
import { concat, reshape } from '../kernels/shape.ts';
import { Conv2d, ConvTranspose2d, LeakyReLU, ReLU, Sequential, Sigmoid, Tanh } from '../nn/layers.ts';
import { Module } from '../nn/module.ts';
import { ConfigReader } from './pretrained.ts';
import { fromFolder } from './diffusers/loading.ts';

export interface RainNetConfig {
  inputNc: number;
  outputNc: number;
  ngf: number;
}

/** The constructor arguments from a config.json like the reference folder's (input_nc, output_nc, ngf; RAIN norms, attention). */
export function rainNetConfig(json: Record<string, unknown>, source = 'config.json'): RainNetConfig {
  const c = new ConfigReader(json, source);
  c.expectDefaults({ norm_layer: ['RAIN'], use_attention: [true] });
  return { inputNc: c.int('input_nc', 3, 1), outputNc: c.int('output_nc', 3, 1), ngf: c.int('ngf', 64, 1) };
}

const eps = 1e-5;

/** Statistics of x [B, C, h, w] over the region r [B, 1, h, w]: mean and std (biased, + eps), [B, C, 1, 1]. */
function regionStats(x: Tensor, r: Tensor): { mean: Tensor; std: Tensor } {
  const n = add(sum(r, [2, 3], { keepdim: true }), eps);
  const mean = div(sum(mul(x, r), [2, 3], { keepdim: true }), n);
  const d = mul(sub(x, mean), r);
  return { mean, std: sqrt(add(div(sum(mul(d, d), [2, 3], { keepdim: true }), n), eps)) };
}

/** RAIN (normalize.py): background normalised with its own statistics; foreground re-normalised to the background's. */
export class RAIN extends Module {
  readonly foreground_gamma: Tensor;
  readonly foreground_beta: Tensor;
  readonly background_gamma: Tensor;
  readonly background_beta: Tensor;

  constructor(readonly channels: number) {
    super();
    this.foreground_gamma = this.param('foreground_gamma', Tensor.zeros([channels]));
    this.foreground_beta = this.param('foreground_beta', Tensor.zeros([channels]));
    this.background_gamma = this.param('background_gamma', Tensor.zeros([channels]));
    this.background_beta = this.param('background_beta', Tensor.zeros([channels]));
  }

  /** x [B, C, h, w]; mask [B, 1, H, W] (binary), resized to h×w by nearest (PyTorch's: src = ⌊dst·in/out⌋). */
  forward(x: Tensor, mask: Tensor): Tensor {
    return tidy(() => {
      const [, C, h, w] = x.shape as [number, number, number, number];
      const m = mask.shape[2] === h && mask.shape[3] === w ? mask : interpolate(mask, { size: [h, w], mode: 'nearest' });
      const back = affine(m, -1, 1);
      const b = regionStats(x, back);
      const f = regionStats(x, m);
      const v = (t: Tensor) => reshape(t, [1, C, 1, 1]);
      const outBack = add(mul(div(sub(x, b.mean), b.std), add(v(this.background_gamma), 1)), v(this.background_beta));
      const outFore = add(mul(add(mul(div(sub(x, f.mean), f.std), b.std), b.mean), add(v(this.foreground_gamma), 1)), v(this.foreground_beta));
      return add(mul(outBack, back), mul(outFore, m));
    });
  }
}

/** InstanceNorm2d(affine=False): statistics per sample and channel. */
class InstanceNorm extends Module {
  forward(x: Tensor): Tensor {
    return groupNorm(x, x.shape[1]!, undefined, undefined, eps);
  }
}

const down = (inC: number, outC: number) => new Sequential([new LeakyReLU(0.2), new Conv2d(inC, outC, 4, { stride: 2, padding: 1, bias: false })]);
const up = (inC: number, outC: number, bias = false) => new Sequential([new ReLU(), new ConvTranspose2d(inC, outC, 4, { stride: 2, padding: 1, bias })]);

/**
 * UnetBlockCodec: cat([LeakyReLU(x), RAIN(up(submodule(norm(down(x)))))]). The innermost block has no norm and no
 * submodule, and keeps its down and up convolutions in one Sequential `up` (indices 1 and 3), as the reference.
 */
class UnetBlockCodec extends Module {
  readonly down: Sequential | undefined;
  readonly downnorm: InstanceNorm | undefined;
  readonly submodule: UnetBlockCodec | undefined;
  readonly up: Sequential;
  readonly upnorm: RAIN;

  constructor(outer: number, inner: number, submodule?: UnetBlockCodec) {
    super();
    if (submodule) {
      this.down = this.module('down', down(outer, inner));
      this.downnorm = this.module('downnorm', new InstanceNorm());
      this.submodule = this.module('submodule', submodule);
      this.up = this.module('up', up(2 * inner, outer));
    } else {
      this.up = this.module('up', new Sequential([new LeakyReLU(0.2), new Conv2d(outer, inner, 4, { stride: 2, padding: 1, bias: false }), new ReLU(), new ConvTranspose2d(inner, outer, 4, { stride: 2, padding: 1, bias: false })]));
    }
    this.upnorm = this.module('upnorm', new RAIN(outer));
  }

  forward(x: Tensor, mask: Tensor, capture?: Capture, name = 'unet_block'): Tensor {
    return tidy(() => {
      let y: Tensor;
      if (this.submodule) {
        const d = keep(capture, `${name}.downnorm`, this.downnorm!.forward(this.down!.forward(x)));
        y = this.up.forward(this.submodule.forward(d, mask, capture, `${name}.submodule`));
      } else {
        y = keep(capture, `${name}.up`, this.up.forward(x));
      }
      return keep(capture, name, concat([leakyRelu(x, 0.2), keep(capture, `${name}.upnorm`, this.upnorm.forward(y, mask))], 1));
    });
  }
}

type Capture = (name: string, t: Tensor) => void;
const keep = (capture: Capture | undefined, name: string, t: Tensor) => {
  capture?.(name, t);
  return t;
};

export class RainNet extends Module {
  readonly config: RainNetConfig;
  readonly model_layer0: Conv2d;
  readonly model_layer1: Sequential;
  readonly model_layer2: Sequential;
  readonly model_layer3: Sequential;
  readonly unet_block: UnetBlockCodec;
  readonly model_layer11: Sequential;
  readonly model_layer11norm: RAIN;
  readonly model_layer11att: Sequential;
  readonly model_layer12: Sequential;
  readonly model_layer12norm: RAIN;
  readonly model_layer12att: Sequential;
  readonly model_layer13: Sequential;
  readonly model_layer13norm: RAIN;
  readonly model_layer13att: Sequential;
  readonly model_out: Sequential;
  readonly #norm = new InstanceNorm();

  constructor(config: RainNetConfig = { inputNc: 3, outputNc: 3, ngf: 64 }) {
    super();
    this.config = config;
    const g = config.ngf;
    this.model_layer0 = this.module('model_layer0', new Conv2d(config.inputNc, g, 4, { stride: 2, padding: 1, bias: false }));
    this.model_layer1 = this.module('model_layer1', down(g, 2 * g));
    this.model_layer2 = this.module('model_layer2', down(2 * g, 4 * g));
    this.model_layer3 = this.module('model_layer3', down(4 * g, 8 * g));
    let block = new UnetBlockCodec(8 * g, 8 * g);
    for (let k = 0; k < 3; k++) block = new UnetBlockCodec(8 * g, 8 * g, block);
    this.unet_block = this.module('unet_block', block);
    const level = (n: number, inC: number, outC: number) => {
      const conv = this.module(`model_layer${n}`, up(inC, outC));
      const norm = this.module(`model_layer${n}norm`, new RAIN(outC));
      const att = this.module(`model_layer${n}att`, new Sequential([new Conv2d(2 * outC, 2 * outC, 1), new Sigmoid()]));
      return [conv, norm, att] as const;
    };
    [this.model_layer11, this.model_layer11norm, this.model_layer11att] = level(11, 16 * g, 4 * g);
    [this.model_layer12, this.model_layer12norm, this.model_layer12att] = level(12, 8 * g, 2 * g);
    [this.model_layer13, this.model_layer13norm, this.model_layer13att] = level(13, 4 * g, g);
    this.model_out = this.module('model_out', new Sequential([new ReLU(), new ConvTranspose2d(2 * g, config.outputNc, 4, { stride: 2, padding: 1 }), new Tanh()]));
  }

  /** A folder with config.json and model.safetensors (the reference's state_dict; F16 read as f32). */
  static fromPretrained(dir: string): RainNet {
    return fromFolder(dir, (config) => new RainNet(rainNetConfig(config.config, config.source)));
  }


  /**
   * The generator G(comp, mask): comp [N, 3, H, W] in [−1, 1], mask [N, 1, H, W] of {0, 1}; H and W multiples of
   * 256 (eight stride-2 levels). Returns [N, outputNc, H, W] in [−1, 1], before blending (`harmonize`).
   */
  forward(comp: Tensor, mask: Tensor, { capture }: { capture?: Capture } = {}): Tensor {
    const [N, C, H, W] = comp.shape as [number, number, number, number];
    if (comp.rank !== 4 || C !== this.config.inputNc) throw new Error(`RainNet.forward: comp has shape [${comp.shape.join(', ')}], expected [N, ${this.config.inputNc}, H, W]`);
    if (mask.rank !== 4 || mask.shape[0] !== N || mask.shape[1] !== 1 || mask.shape[2] !== H || mask.shape[3] !== W) {
      throw new Error(`RainNet.forward: mask has shape [${mask.shape.join(', ')}], expected [${N}, 1, ${H}, ${W}] (the composite's size)`);
    }
    if (H % 256 || W % 256) throw new Error(`RainNet.forward: ${H}×${W} is not a multiple of 256 (the network has eight stride-2 levels)`);
    return tidy(() => {
      const x0 = keep(capture, 'model_layer0', this.model_layer0.forward(comp));
      const x1 = keep(capture, 'model_layer1norm', this.#norm.forward(this.model_layer1.forward(x0)));
      const x2 = keep(capture, 'model_layer2norm', this.#norm.forward(this.model_layer2.forward(x1)));
      const x3 = keep(capture, 'model_layer3norm', this.#norm.forward(this.model_layer3.forward(x2)));
      let o = this.unet_block.forward(x3, mask, capture);
      for (const [n, skip] of [[11, x2], [12, x1], [13, x0]] as const) {
        const upped = keep(capture, `model_layer${n}`, (this[`model_layer${n}`] as Sequential).forward(o));
        const y = keep(capture, `model_layer${n}norm`, (this[`model_layer${n}norm`] as RAIN).forward(upped, mask));
        const c = concat([leakyRelu(skip, 0.2), y], 1);
        const att = keep(capture, `model_layer${n}att`, (this[`model_layer${n}att`] as Sequential).forward(c));
        o = mul(att, c);
      }
      return this.model_out.forward(o);
    });
  }
}

/** G(x, m)·m + x·(1 − m): only the masked object changes (the Free-Mask release's blending). */
export function harmonize(output: Tensor, comp: Tensor, mask: Tensor): Tensor {
  const [N, C, H, W] = comp.shape as [number, number, number, number];
  if (comp.rank !== 4 || C !== 3) throw new Error(`harmonize: the composite has shape [${comp.shape.join(', ')}], expected an RGB batch [N, 3, H, W]`);
  if (output.shape.join() !== comp.shape.join()) throw new Error(`harmonize: the generator output [${output.shape.join(', ')}] does not match the composite [${comp.shape.join(', ')}]`);
  if (mask.rank !== 4 || mask.shape[0] !== N || mask.shape[1] !== 1 || mask.shape[2] !== H || mask.shape[3] !== W) {
    throw new Error(`harmonize: the mask has shape [${mask.shape.join(', ')}], expected [${N}, 1, ${H}, ${W}] (one channel at the composite's size)`);
  }
  return tidy(() => add(mul(output, mask), mul(comp, affine(mask, -1, 1))));
}
