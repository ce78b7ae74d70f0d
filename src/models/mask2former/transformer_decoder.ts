// Mask2Former's transformer module (transformers' Mask2FormerTransformerModule): learned queries refined by
// masked-attention decoder layers (cross-attention restricted to the previous prediction's foreground, then
// self-attention, then FFN, post-norm), predicting masks before the first layer and after each one.

import { Tensor, tidy } from '../../engine/tensor.ts';
import { add, compare, maximum, relu, sigmoid } from '../../kernels/elementwise.ts';
import { activate } from '../pretrained.ts';
import { linear, matmul } from '../../kernels/matmul.ts';
import { sum } from '../../kernels/reduce.ts';
import { interpolate } from '../../kernels/resample.ts';
import { scaledDotProductAttention } from '../../kernels/attention.ts';
import { expand, permute, reshape, slice, unsqueeze } from '../../kernels/shape.ts';
import { noGrad } from '../../engine/autograd.ts';
import { Module, ModuleList } from '../../nn/module.ts';
import { LayerNorm, Linear } from '../../nn/layers.ts';
import type { Mask2FormerConfig } from './config.ts';
import { sinePositionEmbedding } from './pixel_decoder.ts';

/** nn.Embedding's parameter layout: one `weight` [num, dim]. */
export class Embedding extends Module {
  readonly weight: Tensor;
  constructor(num: number, dim: number) {
    super();
    this.weight = this.param('weight', Tensor.zeros([num, dim]));
  }
}

/** [B, L, heads·d] → [B, heads, L, d]. */
function splitHeads(x: Tensor, heads: number): Tensor {
  const [B, L, C] = x.shape as [number, number, number];
  return permute(reshape(x, [B, L, heads, C / heads]), [0, 2, 1, 3]);
}

function mergeHeads(x: Tensor): Tensor {
  const [B, h, L, d] = x.shape as [number, number, number, number];
  return reshape(permute(x, [0, 2, 1, 3]), [B, L, h * d]);
}

/** transformers' Mask2FormerAttention: q/k from states + position, v from the states alone. */
class SelfAttention extends Module {
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly qProj: Linear;
  readonly outProj: Linear;
  constructor(dim: number, readonly heads: number) {
    super();
    this.kProj = this.module('k_proj', new Linear(dim, dim));
    this.vProj = this.module('v_proj', new Linear(dim, dim));
    this.qProj = this.module('q_proj', new Linear(dim, dim));
    this.outProj = this.module('out_proj', new Linear(dim, dim));
  }

  forward(h: Tensor, pos: Tensor): Tensor {
    const withPos = add(h, pos);
    const out = scaledDotProductAttention(
      splitHeads(this.qProj.forward(withPos), this.heads),
      splitHeads(this.kProj.forward(withPos), this.heads),
      splitHeads(this.vProj.forward(h), this.heads),
    );
    return this.outProj.forward(mergeHeads(out));
  }
}

/** torch.nn.MultiheadAttention's parameters (packed in_proj), used for the masked cross-attention. */
class MultiheadAttention extends Module {
  readonly inProjWeight: Tensor;
  readonly inProjBias: Tensor;
  readonly outProj: Linear;
  constructor(readonly dim: number, readonly heads: number) {
    super();
    this.inProjWeight = this.param('in_proj_weight', Tensor.zeros([3 * dim, dim]));
    this.inProjBias = this.param('in_proj_bias', Tensor.zeros([3 * dim]));
    this.outProj = this.module('out_proj', new Linear(dim, dim));
  }

  /** query [B, Q, C], key / value [B, K, C], keep [B, 1, Q, K] (1 = attend). */
  forward(query: Tensor, key: Tensor, value: Tensor, keep: Tensor): Tensor {
    const C = this.dim;
    const proj = (x: Tensor, k: number) => splitHeads(linear(x, slice(this.inProjWeight, 0, k * C, (k + 1) * C), slice(this.inProjBias, 0, k * C, (k + 1) * C)), this.heads);
    const out = scaledDotProductAttention(proj(query, 0), proj(key, 1), proj(value, 2), { mask: keep });
    return this.outProj.forward(mergeHeads(out));
  }
}

class DecoderLayer extends Module {
  readonly selfAttn: SelfAttention;
  readonly selfAttnLayerNorm: LayerNorm;
  readonly crossAttn: MultiheadAttention;
  readonly crossAttnLayerNorm: LayerNorm;
  readonly fc1: Linear;
  readonly fc2: Linear;
  readonly finalLayerNorm: LayerNorm;
  readonly act: Mask2FormerConfig['activationFunction'];
  constructor(c: Mask2FormerConfig) {
    super();
    const d = c.hiddenDim;
    this.act = c.activationFunction;
    this.selfAttn = this.module('self_attn', new SelfAttention(d, c.numAttentionHeads));
    this.selfAttnLayerNorm = this.module('self_attn_layer_norm', new LayerNorm(d));
    this.crossAttn = this.module('cross_attn', new MultiheadAttention(d, c.numAttentionHeads));
    this.crossAttnLayerNorm = this.module('cross_attn_layer_norm', new LayerNorm(d));
    this.fc1 = this.module('fc1', new Linear(d, c.dimFeedforward));
    this.fc2 = this.module('fc2', new Linear(c.dimFeedforward, d));
    this.finalLayerNorm = this.module('final_layer_norm', new LayerNorm(d));
  }

  forward(h: Tensor, memory: Tensor, memoryPos: Tensor, queryPos: Tensor, keep: Tensor): Tensor {
    const cross = this.crossAttn.forward(add(h, queryPos), add(memory, memoryPos), memory, keep);
    const h1 = this.crossAttnLayerNorm.forward(add(h, cross));
    const h2 = this.selfAttnLayerNorm.forward(add(h1, this.selfAttn.forward(h1, queryPos)));
    return this.finalLayerNorm.forward(add(h2, this.fc2.forward(activate(this.act, this.fc1.forward(h2)))));
  }
}

/** Linear + activation with the Linear named '0' (transformers' Mask2FormerPredictionBlock). */
class PredictionBlock extends Module {
  readonly linear: Linear;
  constructor(inDim: number, outDim: number, readonly withRelu: boolean) {
    super();
    this.linear = this.module('0', new Linear(inDim, outDim));
  }

  forward(x: Tensor): Tensor {
    const y = this.linear.forward(x);
    return this.withRelu ? relu(y) : y;
  }
}

class MaskPredictor extends Module {
  readonly maskEmbedder: ModuleList<PredictionBlock>;
  constructor(hidden: number, maskFeatureSize: number) {
    super();
    this.maskEmbedder = this.module('mask_embedder', new ModuleList([
      new PredictionBlock(hidden, hidden, true),
      new PredictionBlock(hidden, hidden, true),
      new PredictionBlock(hidden, maskFeatureSize, false),
    ]));
  }

  /** normed queries [B, Q, C] and mask features [B, C', H, W] → mask logits [B, Q, H, W]. */
  forward(normed: Tensor, maskFeatures: Tensor): Tensor {
    let e = normed;
    for (const block of this.maskEmbedder) e = block.forward(e);
    const [B, Cm, H, W] = maskFeatures.shape as [number, number, number, number];
    return reshape(matmul(e, reshape(maskFeatures, [B, Cm, H * W])), [B, normed.shape[1]!, H, W]);
  }
}

/**
 * The cross-attention keep mask [B, 1, Q, h·w] from mask logits: where sigmoid(logits resized to h×w) ≥ 0.5;
 * a query whose mask is empty attends everywhere. Not differentiated (the reference detaches it).
 */
export function attentionKeepMask(maskLogits: Tensor, [h, w]: [number, number]): Tensor {
  return noGrad(() => tidy(() => {
    const [B, Q] = maskLogits.shape as [number, number];
    const resized = interpolate(maskLogits, { size: [h, w], mode: 'bilinear', alignCorners: false });
    const keep = compare('ge', sigmoid(reshape(resized, [B, 1, Q, h * w])), 0.5);
    return maximum(keep, compare('eq', sum(keep, -1, { keepdim: true }), 0));
  }));
}

export interface DecoderPrediction {
  /** layernorm(query states) [B, Q, C], the input of the class head. */
  normed: Tensor;
  masksQueriesLogits: Tensor;
}

export interface TransformerModuleOutput {
  /** Query states [B, Q, C] before each layer, then after the last (not normed). */
  hiddenStates: Tensor[];
  /** Before the first layer, then after each layer. */
  predictions: DecoderPrediction[];
}

class MaskedAttentionDecoder extends Module {
  readonly layers: ModuleList<DecoderLayer>;
  readonly layernorm: LayerNorm;
  readonly maskPredictor: MaskPredictor;
  constructor(c: Mask2FormerConfig) {
    super();
    this.layers = this.module('layers', new ModuleList(Array.from({ length: c.decoderLayers - 1 }, () => new DecoderLayer(c))));
    this.layernorm = this.module('layernorm', new LayerNorm(c.hiddenDim));
    this.maskPredictor = this.module('mask_predictor', new MaskPredictor(c.hiddenDim, c.maskFeatureSize));
  }
}

export class Mask2FormerTransformerModule extends Module {
  readonly queriesEmbedder: Embedding;
  readonly queriesFeatures: Embedding;
  readonly decoder: MaskedAttentionDecoder;
  readonly levelEmbed: Embedding;
  constructor(readonly config: Mask2FormerConfig) {
    super();
    const d = config.hiddenDim;
    this.queriesEmbedder = this.module('queries_embedder', new Embedding(config.numQueries, d));
    this.queriesFeatures = this.module('queries_features', new Embedding(config.numQueries, d));
    this.decoder = this.module('decoder', new MaskedAttentionDecoder(config));
    this.levelEmbed = this.module('level_embed', new Embedding(3, d));
  }

  /** multiScaleFeatures: 3 maps [B, C, h, w] (coarsest first); maskFeatures [B, C', H, W]. */
  forward(multiScaleFeatures: Tensor[], maskFeatures: Tensor): TransformerModuleOutput {
    const B = maskFeatures.shape[0]!;
    const d = this.config.hiddenDim;
    const sizes = multiScaleFeatures.map((f) => [f.shape[2]!, f.shape[3]!] as [number, number]);
    const memory = multiScaleFeatures.map((f, l) => tidy(() => {
      const levelBias = reshape(slice(this.levelEmbed.weight, 0, l, l + 1), [1, d, 1]);
      return permute(add(reshape(f, [B, d, -1]), levelBias), [0, 2, 1]);
    }));
    const memoryPos = sizes.map(([h, w]) => {
      const emb = sinePositionEmbedding(h, w, d / 2);
      return tidy(() => permute(Tensor.fromArray(emb, [1, d, h * w]), [0, 2, 1]));
    });
    const queryPos = this.queriesEmbedder.weight;
    let h = expand(unsqueeze(this.queriesFeatures.weight, 0), [B, this.config.numQueries, d]);
    const hiddenStates: Tensor[] = [];
    const predictions: DecoderPrediction[] = [];
    const predict = (states: Tensor): DecoderPrediction => tidy(() => {
      const normed = this.decoder.layernorm.forward(states);
      return { normed, masksQueriesLogits: this.decoder.maskPredictor.forward(normed, maskFeatures) };
    });
    predictions.push(predict(h));
    let keep = attentionKeepMask(predictions[0]!.masksQueriesLogits, sizes[0]!);
    [...this.decoder.layers].forEach((layer, idx) => {
      hiddenStates.push(h);
      const level = idx % 3;
      h = tidy(() => layer.forward(h, memory[level]!, memoryPos[level]!, queryPos, keep));
      keep.dispose();
      const p = predict(h);
      predictions.push(p);
      keep = attentionKeepMask(p.masksQueriesLogits, sizes[(idx + 1) % 3]!);
    });
    hiddenStates.push(h);
    keep.dispose();
    for (const t of [...memory, ...memoryPos]) t.dispose();
    return { hiddenStates, predictions };
  }
}
