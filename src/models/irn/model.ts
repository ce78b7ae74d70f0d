// IRNet's network (reference jiwoon-ahn/irn net/resnet50_irn.py, Net / EdgeDisplacement) on a Swin backbone: the
// boundary and displacement branches read the frozen backbone of a segmenter, as IRNet's read its frozen ResNet-50
// (the reference detaches every stage output). No ImageNet network can be downloaded here, so the backbone is the
// one a Mask2Former learnt on the same world. x1 is the patch embeddings' map (stride 4, like IRNet's conv1 +
// pool), x2 … x5 the four Swin stages (strides 4, 8, 16, 32). TFISeg / SISeg train the branches from semantic masks
// alone (pair labels from the class map: src/models/irn/losses.ts).
//
// A folder: config.json ({ model_type: 'irn', backbone_config: transformers' SwinConfig, input_scale, radius })
// and model.safetensors (backbone.* under transformers' Swin names, branches.* under IRNet's).

import { noGrad } from '../../engine/autograd.ts';
import { Tensor, tidy } from '../../engine/tensor.ts';
import { interpolate } from '../../kernels/resample.ts';
import { concat } from '../../kernels/shape.ts';
import { indexSelect } from '../../kernels/gather.ts';
import { Module } from '../../nn/module.ts';
import { type SwinConfig, parseSwin, swinConfigJson } from '../mask2former/config.ts';
import { pixelValues } from '../mask2former/data.ts';
import { Mask2FormerForUniversalSegmentation } from '../mask2former/model.ts';
import { SwinBackbone } from '../mask2former/swin.ts';
import { ConfigReader } from '../pretrained.ts';
import { fromFolder } from '../diffusers/loading.ts';
import { IrnBranches } from './heads.ts';

export interface IrnConfig {
  backbone: SwinConfig;
  /** Images are resized by this before the backbone (2: ShapeWorld's 64² seen at 128², a 32² boundary grid). */
  inputScale: number;
  /** Radius of the training pairs on the stride-4 grid (IRNet: 10 on 128² crops' grids). */
  radius: number;
}

export function parseIrnConfig(json: Record<string, unknown>, what = 'config.json'): IrnConfig {
  const c = new ConfigReader(json, what);
  if (json.model_type !== 'irn') c.fail('model_type', "'irn'");
  const backbone = c.child('backbone_config') ?? c.fail('backbone_config', 'a Swin backbone config');
  const inputScale = c.number('input_scale', 1);
  if (!(inputScale > 0) || !Number.isInteger(4 / inputScale)) c.fail('input_scale', 'a positive number dividing 4 (1, 2 or 4)');
  return { backbone: { ...parseSwin(backbone), outFeatures: ['stage1', 'stage2', 'stage3', 'stage4'], dropPathRate: 0 }, inputScale, radius: c.int('radius', 5, 1) };
}

export function irnConfigJson(c: IrnConfig): Record<string, unknown> {
  return { model_type: 'irn', backbone_config: swinConfigJson(c.backbone), input_scale: c.inputScale, radius: c.radius };
}

export class IrnNet extends Module {
  readonly backbone: SwinBackbone;
  readonly branches: IrnBranches;

  constructor(readonly config: IrnConfig) {
    super();
    this.backbone = this.module('backbone', new SwinBackbone(config.backbone));
    const e = config.backbone.embedDim;
    this.branches = this.module('branches', new IrnBranches({ channels: [e, e, 2 * e, 4 * e, 8 * e], strides: [4, 4, 8, 16, 32] }));
  }

  /** Image pixels per boundary-grid cell: 4 / inputScale. */
  get stride(): number {
    return 4 / this.config.inputScale;
  }

  /**
   * A new network whose (frozen) backbone is the Swin of a Mask2Former folder, branches freshly initialised.
   * `inputScale` and `radius` as in IrnConfig.
   */
  static fromSegmenter(dir: string, { inputScale = 2, radius = 5 } = {}): IrnNet {
    const segmenter = Mask2FormerForUniversalSegmentation.fromPretrained(dir);
    try {
      const net = new IrnNet({ backbone: { ...segmenter.config.backbone, outFeatures: ['stage1', 'stage2', 'stage3', 'stage4'], dropPathRate: 0 }, inputScale, radius });
      net.backbone.loadStateDict(segmenter.model.pixelLevelModule.encoder.stateDict());
      return net;
    } finally {
      segmenter.dispose();
    }
  }

  /** A folder with config.json and model.safetensors (F16 read as f32), in eval mode. */
  static fromPretrained(dir: string): IrnNet {
    return fromFolder(dir, (config) => new IrnNet(parseIrnConfig(config.config, config.source)));
  }

  /**
   * Pixel values [B, 3, H·s, W·s] for the backbone: RGB bytes [B images of H×W] resized by the input scale
   * (bilinear) and normalised with ImageNet's statistics, as the segmenter saw them.
   */
  pixels(images: readonly Uint8Array[], [H, W]: [number, number]): Tensor {
    const n = H * W;
    const data = new Float32Array(images.length * 3 * n);
    images.forEach((image, b) => {
      if (image.length !== 3 * n) throw new Error(`IrnNet: image ${b} has ${image.length} bytes, expected ${H}×${W}×3`);
      data.set(pixelValues({ width: W, height: H, image }), b * 3 * n);
    });
    return tidy(() => {
      const x = Tensor.fromArray(data, [images.length, 3, H, W]);
      const s = this.config.inputScale;
      return s === 1 ? x : interpolate(x, { size: [H * s, W * s], mode: 'bilinear', alignCorners: false });
    });
  }

  /** The frozen backbone's five maps (no gradient). */
  features(pixels: Tensor): [Tensor, Tensor, Tensor, Tensor, Tensor] {
    return noGrad(() => this.backbone.forward(pixels, { embeddings: true })) as [Tensor, Tensor, Tensor, Tensor, Tensor];
  }

  /** Edge logits [B, 1, h, w] and displacement [B, 2, h, w] on the stride-4 grid of the pixels. */
  forward(pixels: Tensor): { edgeLogits: Tensor; dp: Tensor } {
    const x = this.features(pixels);
    try {
      return this.branches.forward(x);
    } finally {
      for (const t of x) t.dispose();
    }
  }

  /**
   * EdgeDisplacement for one image (RGB bytes H×W): the boundary [1, h, w] averaged with the horizontal flip's
   * and the displacement [2, h, w], on the grid of `stride` image pixels.
   */
  edgeDisplacement(image: Uint8Array, size: [number, number]): { edge: Tensor; dp: Tensor } {
    return noGrad(() => tidy(() => {
      const x = this.pixels([image], size);
      const [, , h, w] = x.shape as number[];
      const flipped = indexSelect(x, 3, Tensor.fromArray(Int32Array.from({ length: w! }, (_, i) => w! - 1 - i), [w!], 'i32'));
      const maps = this.features(concat([x, flipped], 0));
      return this.branches.edgeDisplacement(maps, [h!, w!]);
    }));
  }
}
