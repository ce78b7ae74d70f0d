// Mask2Former configuration: the fields of transformers' Mask2FormerConfig (with a SwinConfig backbone) that
// the model reads, parsed from a config.json with checks naming what is wrong.

export interface SwinConfig {
  imageSize: number;
  patchSize: number;
  numChannels: number;
  embedDim: number;
  depths: number[];
  numHeads: number[];
  windowSize: number;
  mlpRatio: number;
  qkvBias: boolean;
  layerNormEps: number;
  hiddenAct: string;
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

function field<T>(obj: Json, key: string, what: string, check: (v: unknown) => boolean, expected: string, fallback?: T): T {
  const v = obj[key];
  if (v === undefined && fallback !== undefined) return fallback;
  if (!check(v)) throw new Error(`${what}: field '${key}' must be ${expected}, got ${JSON.stringify(v)}`);
  return v as T;
}

const isNum = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
const isInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
const isIntList = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every(isInt);

function parseSwin(b: Json, what: string): SwinConfig {
  if (b.model_type !== 'swin') throw new Error(`${what}: backbone_config.model_type must be 'swin', got ${JSON.stringify(b.model_type)}`);
  const w = `${what} backbone_config`;
  const depths = field<number[]>(b, 'depths', w, isIntList, 'a list of positive integers');
  const numHeads = field<number[]>(b, 'num_heads', w, isIntList, 'a list of positive integers');
  if (numHeads.length !== depths.length) throw new Error(`${w}: num_heads has ${numHeads.length} entries, depths ${depths.length}`);
  const stageNames = depths.map((_, i) => `stage${i + 1}`);
  const outFeatures = field<string[]>(b, 'out_features', w, (v) => Array.isArray(v) && v.every((s) => stageNames.includes(s as string)), `a list of ${stageNames.join('/')}`, stageNames);
  const hiddenAct = field<string>(b, 'hidden_act', w, (v) => v === 'gelu', "'gelu'", 'gelu');
  if (b.use_absolute_embeddings) throw new Error(`${w}: use_absolute_embeddings is not supported (Mask2Former checkpoints do not use it)`);
  return {
    imageSize: field(b, 'image_size', w, isInt, 'a positive integer', 224),
    patchSize: field(b, 'patch_size', w, isInt, 'a positive integer', 4),
    numChannels: field(b, 'num_channels', w, isInt, 'a positive integer', 3),
    embedDim: field(b, 'embed_dim', w, isInt, 'a positive integer'),
    depths,
    numHeads,
    windowSize: field(b, 'window_size', w, isInt, 'a positive integer'),
    mlpRatio: field(b, 'mlp_ratio', w, isNum, 'a number', 4),
    qkvBias: field(b, 'qkv_bias', w, (v) => typeof v === 'boolean', 'a boolean', true),
    layerNormEps: field(b, 'layer_norm_eps', w, isNum, 'a number', 1e-5),
    hiddenAct,
    dropPathRate: field(b, 'drop_path_rate', w, (v) => isNum(v) && (v as number) >= 0 && (v as number) < 1, 'a number in [0, 1)', 0.1),
    outFeatures,
  };
}

/** Parses a transformers Mask2FormerConfig (config.json contents); `what` names the source in errors. */
export function parseMask2FormerConfig(json: Json, what = 'config.json'): Mask2FormerConfig {
  if (json.model_type !== 'mask2former') throw new Error(`${what}: model_type must be 'mask2former', got ${JSON.stringify(json.model_type)}`);
  const backboneJson = json.backbone_config;
  if (!backboneJson || typeof backboneJson !== 'object') throw new Error(`${what}: backbone_config (a Swin config) is required`);
  const backbone = parseSwin(backboneJson as Json, what);
  const id2label = json.id2label as Json | undefined;
  const numLabels = id2label ? Object.keys(id2label).length : field<number>(json, 'num_labels', what, isInt, 'a positive integer');
  const num = (k: string, fallback?: number) => field<number>(json, k, what, isNum, 'a number', fallback);
  const int = (k: string, fallback?: number) => field<number>(json, k, what, isInt, 'a positive integer', fallback);
  const config: Mask2FormerConfig = {
    backbone,
    featureSize: int('feature_size', 256),
    maskFeatureSize: int('mask_feature_size', 256),
    hiddenDim: int('hidden_dim', 256),
    encoderFeedforwardDim: int('encoder_feedforward_dim', 1024),
    encoderLayers: int('encoder_layers', 6),
    decoderLayers: int('decoder_layers', 10),
    numAttentionHeads: int('num_attention_heads', 8),
    dimFeedforward: int('dim_feedforward', 2048),
    preNorm: field(json, 'pre_norm', what, (v) => typeof v === 'boolean', 'a boolean', false),
    enforceInputProjection: field(json, 'enforce_input_projection', what, (v) => typeof v === 'boolean', 'a boolean', false),
    commonStride: int('common_stride', 4),
    numQueries: int('num_queries', 100),
    numLabels,
    noObjectWeight: num('no_object_weight', 0.1),
    classWeight: num('class_weight', 2),
    maskWeight: num('mask_weight', 5),
    diceWeight: num('dice_weight', 5),
    trainNumPoints: int('train_num_points', 12544),
    oversampleRatio: num('oversample_ratio', 3),
    importanceSampleRatio: num('importance_sample_ratio', 0.75),
    useAuxiliaryLoss: field(json, 'use_auxiliary_loss', what, (v) => typeof v === 'boolean', 'a boolean', true),
    featureStrides: field(json, 'feature_strides', what, isIntList, 'a list of positive integers', [4, 8, 16, 32]),
  };
  const activation = json.activation_function ?? 'relu';
  if (activation !== 'relu') throw new Error(`${what}: activation_function must be 'relu' (the decoder's FFN), got ${JSON.stringify(activation)}`);
  if (config.preNorm) throw new Error(`${what}: pre_norm true is not supported (Mask2Former checkpoints use post-norm)`);
  if (config.featureSize !== config.hiddenDim || config.enforceInputProjection) {
    throw new Error(`${what}: feature_size (${config.featureSize}) must equal hidden_dim (${config.hiddenDim}) without enforce_input_projection (transformers registers no weights for those projections)`);
  }
  if (backbone.outFeatures.length < 4) throw new Error(`${what}: the pixel decoder needs 4 backbone stages, out_features has ${backbone.outFeatures.length}`);
  return config;
}

/** A config.json (transformers' Mask2FormerConfig format) that parses back to `c`; class names `class_<id>`. */
export function mask2formerConfigJson(c: Mask2FormerConfig): Json {
  const b = c.backbone;
  return {
    model_type: 'mask2former',
    backbone_config: {
      model_type: 'swin', image_size: b.imageSize, patch_size: b.patchSize, num_channels: b.numChannels, embed_dim: b.embedDim,
      depths: b.depths, num_heads: b.numHeads, window_size: b.windowSize, mlp_ratio: b.mlpRatio, qkv_bias: b.qkvBias,
      layer_norm_eps: b.layerNormEps, hidden_act: b.hiddenAct, drop_path_rate: b.dropPathRate, out_features: b.outFeatures,
    },
    feature_size: c.featureSize, mask_feature_size: c.maskFeatureSize, hidden_dim: c.hiddenDim, encoder_feedforward_dim: c.encoderFeedforwardDim,
    encoder_layers: c.encoderLayers, decoder_layers: c.decoderLayers, num_attention_heads: c.numAttentionHeads, dim_feedforward: c.dimFeedforward,
    pre_norm: c.preNorm, enforce_input_projection: c.enforceInputProjection, common_stride: c.commonStride, num_queries: c.numQueries,
    id2label: Object.fromEntries(Array.from({ length: c.numLabels }, (_, i) => [String(i), `class_${i}`])),
    no_object_weight: c.noObjectWeight, class_weight: c.classWeight, mask_weight: c.maskWeight, dice_weight: c.diceWeight,
    train_num_points: c.trainNumPoints, oversample_ratio: c.oversampleRatio, importance_sample_ratio: c.importanceSampleRatio,
    use_auxiliary_loss: c.useAuxiliaryLoss, feature_strides: c.featureStrides, activation_function: 'relu',
  };
}
