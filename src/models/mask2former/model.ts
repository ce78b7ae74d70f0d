// Mask2FormerForUniversalSegmentation (transformers 4.57): Swin backbone → pixel decoder → masked-attention
// transformer decoder → class and mask heads, with the Hungarian-matched loss when labels are given.
// Parameter names are transformers' state_dict keys, so a hub checkpoint (config.json + model.safetensors) loads 1:1.

import { Tensor, tidy } from '../../engine/tensor.ts';
import { fromFolder } from '../diffusers/loading.ts';
import { Module } from '../../nn/module.ts';
import { Linear } from '../../nn/layers.ts';
import { type Mask2FormerConfig, parseMask2FormerConfig } from './config.ts';
import { SwinBackbone } from './swin.ts';
import { Mask2FormerPixelDecoder } from './pixel_decoder.ts';
import { Mask2FormerTransformerModule } from './transformer_decoder.ts';
import { type LossOptions, type Mask2FormerLossOutput, mask2formerLoss } from './loss.ts';

export interface Mask2FormerLogits {
  classQueriesLogits: Tensor;
  masksQueriesLogits: Tensor;
}

export interface Mask2FormerOutput extends Mask2FormerLogits {
  /** Predictions before the first decoder layer and after each but the last, in order. */
  auxiliaryLogits: Mask2FormerLogits[];
  /** Σ of the weighted loss terms, when labels were given. */
  loss?: Tensor;
  /** The weighted loss terms by transformers' names (loss_cross_entropy, loss_mask_0, …) and the matchings. */
  lossDetails?: Mask2FormerLossOutput;
  /** Normed backbone maps [B, C, H, W], finest first. */
  encoderHiddenStates: Tensor[];
  /** Pixel decoder maps, coarsest first. */
  pixelDecoderHiddenStates: Tensor[];
  /** Mask features [B, C, H/4, W/4]. */
  pixelDecoderLastHiddenState: Tensor;
  /** Query states [B, Q, C] before each decoder layer, then after the last. */
  transformerDecoderHiddenStates: Tensor[];
}

export interface ForwardOptions extends LossOptions {
  /** Per image: target masks [objects, H, W] (0/1) at the input resolution. */
  maskLabels?: Tensor[];
  /** Per image: i32 class ids [objects]. */
  classLabels?: Tensor[];
}

class PixelLevelModule extends Module {
  readonly encoder: SwinBackbone;
  readonly decoder: Mask2FormerPixelDecoder;
  constructor(c: Mask2FormerConfig) {
    super();
    this.encoder = this.module('encoder', new SwinBackbone(c.backbone));
    this.decoder = this.module('decoder', new Mask2FormerPixelDecoder(c, this.encoder.channels));
  }
}

class Mask2FormerModel extends Module {
  readonly pixelLevelModule: PixelLevelModule;
  readonly transformerModule: Mask2FormerTransformerModule;
  constructor(c: Mask2FormerConfig) {
    super();
    this.pixelLevelModule = this.module('pixel_level_module', new PixelLevelModule(c));
    this.transformerModule = this.module('transformer_module', new Mask2FormerTransformerModule(c));
  }
}

/** The loss's state in the checkpoint: the cross-entropy class weights (no-object weight last). */
class Criterion extends Module {
  readonly emptyWeight: Tensor;
  constructor(c: Mask2FormerConfig) {
    super();
    const w = new Float32Array(c.numLabels + 1).fill(1);
    w[c.numLabels] = c.noObjectWeight;
    this.emptyWeight = this.buffer('empty_weight', Tensor.fromArray(w, [c.numLabels + 1]));
  }
}

export class Mask2FormerForUniversalSegmentation extends Module {
  readonly model: Mask2FormerModel;
  readonly classPredictor: Linear;
  readonly criterion: Criterion;

  constructor(readonly config: Mask2FormerConfig) {
    super();
    this.model = this.module('model', new Mask2FormerModel(config));
    this.classPredictor = this.module('class_predictor', new Linear(config.hiddenDim, config.numLabels + 1));
    this.criterion = this.module('criterion', new Criterion(config));
  }

  /** Loads `dir`/config.json (transformers Mask2FormerConfig) and `dir`/model.safetensors (strict), in eval mode. */
  static fromPretrained(dir: string): Mask2FormerForUniversalSegmentation {
    return fromFolder(dir, (config) => new Mask2FormerForUniversalSegmentation(parseMask2FormerConfig(config.config, config.source)));
  }

  /**
   * pixelValues [B, 3, H, W] (normalised). With maskLabels and classLabels the result also has the loss and
   * is a Promise (the matching reads predictions back to the CPU).
   */
  forward(pixelValues: Tensor): Mask2FormerOutput;
  forward(pixelValues: Tensor, options: ForwardOptions & { maskLabels: Tensor[]; classLabels: Tensor[] }): Promise<Mask2FormerOutput>;
  forward(pixelValues: Tensor, options?: ForwardOptions): Mask2FormerOutput | Promise<Mask2FormerOutput>;
  forward(pixelValues: Tensor, { maskLabels, classLabels, ...lossOptions }: ForwardOptions = {}): Mask2FormerOutput | Promise<Mask2FormerOutput> {
    if ((maskLabels === undefined) !== (classLabels === undefined)) {
      throw new Error('Mask2FormerForUniversalSegmentation.forward: give both maskLabels and classLabels, or neither');
    }
    // one scope for the whole forward: everything but the outputs is freed (the loss path is async, so
    // callers cannot wrap it in tidy themselves)
    const out = tidy((): Mask2FormerOutput => {
      const encoderHiddenStates = this.model.pixelLevelModule.encoder.forward(pixelValues);
      const { multiScaleFeatures, maskFeatures } = this.model.pixelLevelModule.decoder.forward(encoderHiddenStates);
      const { hiddenStates, predictions } = this.model.transformerModule.forward(multiScaleFeatures, maskFeatures);
      const logits = predictions.map((p) => ({ classQueriesLogits: this.classPredictor.forward(p.normed), masksQueriesLogits: p.masksQueriesLogits }));
      const final = logits[logits.length - 1]!;
      return {
        ...final,
        auxiliaryLogits: logits.slice(0, -1),
        encoderHiddenStates,
        pixelDecoderHiddenStates: multiScaleFeatures,
        pixelDecoderLastHiddenState: maskFeatures,
        transformerDecoderHiddenStates: hiddenStates,
      };
    });
    if (!maskLabels || !classLabels) return out;
    const auxiliary = this.config.useAuxiliaryLoss ? out.auxiliaryLogits : [];
    return mask2formerLoss(this.config, out, auxiliary, maskLabels, classLabels, this.criterion.emptyWeight, lossOptions).then((details) => {
      out.loss = details.total;
      out.lossDetails = details;
      return out;
    });
  }
}

/** Disposes every tensor reachable in `v` (an output, its loss details, arrays and plain objects) once. */
export function disposeTensors(v: unknown, seen = new Set<Tensor>()): void {
  if (v instanceof Tensor) {
    if (!seen.has(v)) v.dispose();
    seen.add(v);
  } else if (Array.isArray(v)) for (const x of v) disposeTensors(x, seen);
  else if (v && typeof v === 'object' && !ArrayBuffer.isView(v)) for (const x of Object.values(v)) disposeTensors(x, seen);
}
