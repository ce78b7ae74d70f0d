// Mask2Former configuration: the fields of transformers' Mask2FormerConfig (with a SwinConfig backbone) that
// the model reads, parsed from a config.json by ConfigReader (errors name the source and key). Each field
// takes the forms and defaults transformers gives it.

import { type ActivationName, ConfigReader } from '../pretrained.ts';

export interface SwinConfig {
  /** [height, width]; an int in most configs. Only absolute position embeddings (unsupported) would use it. */
  imageSize: [number, number];
  /** [height, width] of a patch: the patch-embedding convolution's kernel and stride. */
  patchSize: [number, number];
  numChannels: number;
  embedDim: number;
  depths: number[];
  numHeads: number[];
  windowSize: number;
  mlpRatio: number;
  qkvBias: boolean;
  layerNormEps: number;
  hiddenAct: ActivationName;
  /** Stochastic depth of the last block in training mode (earlier blocks less, linearly from 0). */
  dropPathRate: number;
  /** Stage names ('stage1'..) whose (normed) outputs are returned. */
  outFeatures: string[];
}

export interface Mask2FormerConfig {
  backbone: SwinConfig;
  featureSize: number;
  maskFeatureSize: number;
  hiddenDim: number;
  encoderFeedforwardDim: number;
  encoderLayers: number;
  /** transformers builds decoderLayers − 1 masked-attention layers. */
  decoderLayers: number;
  numAttentionHeads: number;
  dimFeedforward: number;
  /** The masked-attention decoder layers' FFN activation (the pixel decoder's is always ReLU, as transformers). */
  activationFunction: ActivationName;
  preNorm: boolean;
  enforceInputProjection: boolean;
  commonStride: number;
  numQueries: number;
  numLabels: number;
  noObjectWeight: number;
  classWeight: number;
  maskWeight: number;
  diceWeight: number;
  trainNumPoints: number;
  oversampleRatio: number;
  importanceSampleRatio: number;
  useAuxiliaryLoss: boolean;
  featureStrides: number[];
}

type Json = Record<string, unknown>;

/** transformers' Mask2FormerConfig default backbone (backbone_config absent): Swin-T-like with 18 blocks in stage 3. */
const defaultBackbone: Json = {
  model_type: 'swin', image_size: 224, patch_size: 4, num_channels: 3, embed_dim: 96, depths: [2, 2, 18, 2], num_heads: [3, 6, 12, 24],
  window_size: 7, drop_path_rate: 0.3, use_absolute_embeddings: false, out_features: ['stage1', 'stage2', 'stage3', 'stage4'],
};

/** transformers' SwinConfig from a backbone_config. */
export function parseSwin(b: ConfigReader): SwinConfig {
  if (b.config.model_type !== 'swin') throw new Error(`${b.source}: model_type must be 'swin', got ${JSON.stringify(b.config.model_type)}`);
  const depths = b.ints('depths', [2, 2, 6, 2]);
  const numHeads = b.ints('num_heads', [3, 6, 12, 24]);
  if (numHeads.length !== depths.length) throw new Error(`${b.source}: num_heads has ${numHeads.length} entries, depths ${depths.length}`);
  // transformers' BackboneConfigMixin: out_features by name, or out_indices into ['stem', 'stage1', …]. With
  // neither, transformers keeps the last stage only, which no Mask2Former can use: every stage here, as before
  const stageNames = ['stem', ...depths.map((_, i) => `stage${i + 1}`)];
  const outFeatures = b.has('out_features')
    ? b.strings('out_features').map((s, i) => (stageNames.includes(s) ? s : b.fail('out_features', `a list of ${stageNames.join('/')} (entry ${i})`)))
    : b.has('out_indices')
      ? b.ints('out_indices', undefined, -stageNames.length).map((k) => stageNames.at(k) ?? b.fail('out_indices', `indices into ${stageNames.join('/')}`))
      : stageNames.slice(1);
  if (outFeatures.includes('stem')) throw new Error(`${b.source}: out_features 'stem' is not supported (Mask2Former's pixel decoder takes the stage outputs)`);
  // as transformers: stages in order, each once (the pixel decoder's channels follow this order)
  if (outFeatures.some((f, i) => i > 0 && stageNames.indexOf(f) <= stageNames.indexOf(outFeatures[i - 1]!))) {
    b.fail(b.has('out_features') ? 'out_features' : 'out_indices', 'stages in increasing order, each once');
  }
  if (b.bool('use_absolute_embeddings', false)) {
    // transformers adds num_patches + 1 position embeddings to num_patches tokens: no such model runs there either
    throw new Error(`${b.source}: use_absolute_embeddings true is not supported (Mask2Former checkpoints do not use it)`);
  }
  const embedDim = b.int('embed_dim', 96, 1);
  const dropPathRate = b.number('drop_path_rate', 0.1);
  if (dropPathRate < 0 || dropPathRate >= 1) b.fail('drop_path_rate', 'a number in [0, 1)');
  return {
    imageSize: b.intOrPair('image_size', 224),
    patchSize: b.intOrPair('patch_size', 4),
    numChannels: b.int('num_channels', 3, 1),
    embedDim,
    depths,
    numHeads,
    windowSize: b.int('window_size', 7, 1),
    mlpRatio: b.number('mlp_ratio', 4),
    qkvBias: b.bool('qkv_bias', true),
    layerNormEps: b.number('layer_norm_eps', 1e-5),
    hiddenAct: b.activation('hidden_act', 'gelu'),
    dropPathRate,
    outFeatures,
  };
}

/** Parses a transformers Mask2FormerConfig (config.json contents); `what` names the source in errors. */
export function parseMask2FormerConfig(json: Json, what = 'config.json'): Mask2FormerConfig {
  const c = new ConfigReader(json, what);
  if (json.model_type !== 'mask2former') throw new Error(`${what}: model_type must be 'mask2former', got ${JSON.stringify(json.model_type)}`);
  const backbone = parseSwin(c.child('backbone_config') ?? new ConfigReader(defaultBackbone, `${what} default backbone_config`));
  const numLabels = c.has('id2label') ? Object.keys(c.child('id2label')!.config).length : c.int('num_labels', 2, 1);
  const config: Mask2FormerConfig = {
    backbone,
    featureSize: c.int('feature_size', 256, 1),
    maskFeatureSize: c.int('mask_feature_size', 256, 1),
    hiddenDim: c.int('hidden_dim', 256, 1),
    encoderFeedforwardDim: c.int('encoder_feedforward_dim', 1024, 1),
    encoderLayers: c.int('encoder_layers', 6, 1),
    decoderLayers: c.int('decoder_layers', 10, 2),
    numAttentionHeads: c.int('num_attention_heads', 8, 1),
    dimFeedforward: c.int('dim_feedforward', 2048, 1),
    activationFunction: c.activation('activation_function', 'relu'),
    preNorm: c.bool('pre_norm', false),
    enforceInputProjection: c.bool('enforce_input_projection', false),
    commonStride: c.int('common_stride', 4, 1),
    numQueries: c.int('num_queries', 100, 1),
    numLabels,
    noObjectWeight: c.number('no_object_weight', 0.1),
    classWeight: c.number('class_weight', 2),
    maskWeight: c.number('mask_weight', 5),
    diceWeight: c.number('dice_weight', 5),
    trainNumPoints: c.int('train_num_points', 12544, 1),
    oversampleRatio: c.number('oversample_ratio', 3),
    importanceSampleRatio: c.number('importance_sample_ratio', 0.75),
    useAuxiliaryLoss: c.bool('use_auxiliary_loss', true),
    featureStrides: c.ints('feature_strides', [4, 8, 16, 32]),
  };
  if (config.preNorm) throw new Error(`${what}: pre_norm true is not supported (Mask2Former checkpoints use post-norm)`);
  if (config.featureSize !== config.hiddenDim || config.enforceInputProjection) {
    throw new Error(`${what}: feature_size (${config.featureSize}) must equal hidden_dim (${config.hiddenDim}) without enforce_input_projection (transformers registers no weights for those projections)`);
  }
  if (backbone.outFeatures.length < 4) throw new Error(`${what}: the pixel decoder needs 4 backbone stages, out_features has ${backbone.outFeatures.length}`);
  return config;
}

/** A config.json (transformers' Mask2FormerConfig format) that parses back to `c`; class names `class_<id>`. */
export function mask2formerConfigJson(c: Mask2FormerConfig): Json {
  return {
    model_type: 'mask2former',
    backbone_config: swinConfigJson(c.backbone),
    feature_size: c.featureSize, mask_feature_size: c.maskFeatureSize, hidden_dim: c.hiddenDim, encoder_feedforward_dim: c.encoderFeedforwardDim,
    encoder_layers: c.encoderLayers, decoder_layers: c.decoderLayers, num_attention_heads: c.numAttentionHeads, dim_feedforward: c.dimFeedforward,
    pre_norm: c.preNorm, enforce_input_projection: c.enforceInputProjection, common_stride: c.commonStride, num_queries: c.numQueries,
    id2label: Object.fromEntries(Array.from({ length: c.numLabels }, (_, i) => [String(i), `class_${i}`])),
    no_object_weight: c.noObjectWeight, class_weight: c.classWeight, mask_weight: c.maskWeight, dice_weight: c.diceWeight,
    train_num_points: c.trainNumPoints, oversample_ratio: c.oversampleRatio, importance_sample_ratio: c.importanceSampleRatio,
    use_auxiliary_loss: c.useAuxiliaryLoss, feature_strides: c.featureStrides, activation_function: c.activationFunction,
  };
}

/** A backbone_config (transformers' SwinConfig format) that parses back to `b`. */
export function swinConfigJson(b: SwinConfig): Json {
  return {
    model_type: 'swin', image_size: pairOrInt(b.imageSize), patch_size: pairOrInt(b.patchSize), num_channels: b.numChannels, embed_dim: b.embedDim,
    depths: b.depths, num_heads: b.numHeads, window_size: b.windowSize, mlp_ratio: b.mlpRatio, qkv_bias: b.qkvBias,
    layer_norm_eps: b.layerNormEps, hidden_act: b.hiddenAct, drop_path_rate: b.dropPathRate, out_features: b.outFeatures,
  };
}

/** A size pair as transformers saves it: an int when square. */
function pairOrInt([h, w]: [number, number]): number | [number, number] {
  return h === w ? h : [h, w];
}
