// freemask: the library entry.
export { getDevice, deviceInfo } from './engine/device.ts';
export {
  Tensor, tidy, keep, memoryStats, resetPeakMemory, trimPool, numel, type DType, type Shape, type MemoryStats,
} from './engine/tensor.ts';
export { backward, noGrad, isGradEnabled, record } from './engine/autograd.ts';
export { flush, sync, setProfiling, profileReport, resetProfile } from './engine/queue.ts';
export { gradcheck } from './engine/gradcheck.ts';
export * from './kernels/elementwise.ts';
export * from './kernels/reduce.ts';
export * from './kernels/shape.ts';
export * from './kernels/matmul.ts';
export * from './kernels/softmax.ts';
export * from './kernels/attention.ts';
export { conv2d, convTranspose2d, type Conv2dOptions, type ConvTranspose2dOptions, type Pair } from './kernels/conv.ts';
export { maxPool2d, avgPool2d, adaptiveAvgPool2d, type Pool2dOptions, type AvgPool2dOptions } from './kernels/pool.ts';
export * from './kernels/norm.ts';
export * from './kernels/loss.ts';
export * from './kernels/gather.ts';
export * from './kernels/random.ts';
export { msDeformAttn } from './kernels/ms_deform_attn.ts';
export {
  affinityRandomWalk, pixelAffinities, randomWalkStep, affinityOffsets, affinityCrop, type RandomWalkOptions,
} from './kernels/random_walk.ts';
export { interpolate, gridSample, type InterpolateOptions, type InterpolateMode, type GridSampleOptions } from './kernels/resample.ts';
export { Module, ModuleList, halfWeights, type LoadReport, type StateSource } from './nn/module.ts';
export { Linear, Conv2d, ConvTranspose2d, Sequential, ReLU, LeakyReLU, Sigmoid, Tanh, GroupNorm, LayerNorm, BatchNorm2d, uniformInit, onesInit, skipInit } from './nn/layers.ts';
export { Optimizer, type OptimizerStateDict } from './optim/optimizer.ts';
export { SGD } from './optim/sgd.ts';
export { AdamW } from './optim/adamw.ts';
export { manualSeed, seededRandom, subSeed } from './engine/random-cpu.ts';
export { imageToTensor, tensorToImage, maskToImage, imageToLabels, heatmapToImage, sideBySide, stacked, pilResize, type Image } from './io/image.ts';
export { loadSafetensors, saveSafetensors, saveHalfCopy, encodeSafetensors, SafetensorsReader, type RawTensor, type TensorInfo } from './io/safetensors.ts';
export { classes, classSpec, vocClassNames, backgroundKinds, Frame, type ClassSpec, type BackgroundKind, type Box } from './world/classes.ts';
export { type BackgroundSpec, horizonRange, paintBackground } from './world/background.ts';
export { type Primitive, type Rgb, type Layer, rasterize, coverage } from './world/raster.ts';
export {
  generateScene, sampleScene, renderScene, renderLayers, scenePrompt, objectPrimitives, placementPlausibility, cameraHeight, ignoreLabel,
  type Scene, type SceneSpec, type ObjectSpec, type Instance, type Light, type WorldMode,
} from './world/scene.ts';
export { splits, splitSeed, type Split } from './world/splits.ts';
export { contactSheet, writeWorldContactSheet, zoomImage } from './world/contact.ts';
export { encodeIndexedPng, decodeIndexedPng, readIndexedPng, writeIndexedPng, readPng, writePng, type IndexedImage } from './io/png.ts';
export { vocPalette, vocColorImage, vocFolders, vocIds, readVocLabels, writeVocSample, makeVocFolders, type VocSample } from './data/voc.ts';
export { encodeRle, rleToString, rleFromString, maskToRle, rleToMask, parseCoco, vocCategories, type Rle, type CocoFile, type CocoImage, type CocoAnnotation } from './data/coco.ts';
export { writeWorldDataset, writeDataset, instanceAnnotations, readWorldPrompts, sceneAnnotations, type DatasetSample, shapeWorldVersion, worldImageId, type WorldDatasetOptions, type Manifest } from './data/dataset.ts';
export { ConfusionMatrix } from './metrics/miou.ts';
export { maskAp, maskIou, iouThresholds, type MaskInstance, type MaskApResult } from './metrics/maskAp.ts';
export { boundaryF, maskBoundary, boundaryTolerance } from './metrics/boundary.ts';
export { evaluateFolders, formatEvalTable, instancesFromMaps, type EvalResult } from './metrics/evaluate.ts';
export { CLIPTokenizer, type CLIPTokenizerOptions, type EncodeResult, type TruncationInfo } from './models/clip_tokenizer.ts';
export { CLIPTextModel, clipTextConfig, type CLIPTextConfig, type CLIPTextOutput, type CLIPTextForwardOptions, type CLIPTextLoadOptions } from './models/clip_text_model.ts';
export {
  DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler, NoiseScheduler, classifierFreeGuidance, linearCombination,
  type SchedulerStepOutput,
} from './models/schedulers.ts';
export {
  StableDiffusionPipeline, SCHEDULERS, type SchedulerName, type StableDiffusionComponents, type StableDiffusionLoadOptions,
  type SampleOptions, type UNetLike, type VaeLike, type PretrainedLoader,
} from './models/stable_diffusion.ts';
export { Mask2FormerForUniversalSegmentation, type Mask2FormerOutput, type Mask2FormerLogits, type ForwardOptions as Mask2FormerForwardOptions } from './models/mask2former/model.ts';
export { parseMask2FormerConfig, mask2formerConfigJson, type Mask2FormerConfig, type SwinConfig } from './models/mask2former/config.ts';
export { Mask2FormerTrainer, parameterGroups, type TrainOptions as Mask2FormerTrainOptions } from './models/mask2former/train.ts';
export { Trainer, TrainingStopped, trainWithCheckpoints, scheduleFactor, resolveTrainerOptions, checkpointOptions, openCheckpoint, type TrainTask, type TrainerOptions, type TrainGroup, type Batch, type StepResult } from './train/trainer.ts';
export { ExponentialMovingAverage } from './train/ema.ts';
export { evaluateSegmenter, type SegmenterEvaluation } from './models/mask2former/evaluate.ts';
export { readVocSamples, sceneSample, sampleTargets, pixelValues, loadSample, drawAugment, imagenetMean, imagenetStd, type SegmentationSample, type AugmentOptions, type AugmentDraw } from './models/mask2former/data.ts';
export { linearSumAssignment } from './models/mask2former/hungarian.ts';
export { seededUniform, type RandomSource } from './models/mask2former/loss.ts';
export { semanticSegmentation, instanceSegmentation, type InstanceSegmentation, type InstanceSegment, type InstanceOptions } from './models/mask2former/postprocess.ts';
export { UNet2DConditionModel, unetConfig, type UNet2DConditionConfig, type UNetForwardOptions } from './models/unet_2d_condition.ts';
export { AutoencoderKL, autoencoderConfig, autoencoderConfigJson, type AutoencoderKLConfig, type LatentDistribution } from './models/autoencoder_kl.ts';
export { autoencoderTask, latentScalingFactor, imageBatch, gaussianKl, type RgbImage } from './train/autoencoder.ts';
export { lossCurve, curveAxes, barChart, drawText } from './io/plot.ts';
export { ZOO_ATTENTION_PRESET, vaeReconstructionPsnr, worldPromptPairs, oracleLabels, evaluateTextToImage, oracleOnRealSingles, samplingSpeed, type TextToImageEvaluation, type TextToImageEvalOptions, type PairResult, type GeneratedSample } from './pipeline/evaluate_diffusion.ts';
export { TextToImageModel, zooVaeConfig, zooTextToImageConfigs, textToImageTask, groundingTargets, groundingLoss, encodeLatents, saveTextToImagePipeline, sdSchedulerConfig, type LatentCache, type TextToImageOptions, type PipelineParts, type GroundingTarget } from './train/text_to_image.ts';
export { AttentionCapture, type AttentionCaptureOptions, type AttentionKind, type CapturedMap } from './models/attention_capture.ts';
export { type WeightsOptions } from './models/diffusers/loading.ts';
export { ConfigReader, activations, activate, type ActivationName, type JsonConfig } from './models/pretrained.ts';
export {
  AffinityNet, affinityNetSmall, affinityNetFine, affinityLoss, affinityPairLabels, gridLabels, type AffinityNetConfig,
} from './models/affinity_net.ts';
export {
  attentionHeatmap, attentionMask, recordsFromCapture, otsuThreshold, uncertainLabel, adaptiveLevels, thresholdStates, DIFFUMASK_PRESET, DATASET_DIFFUSION_PRESET, attentionMaskConfigFromJson,
  type AttentionRecord, type AttentionMaskConfig, type ThresholdRule, type ClassTokens, type AttentionMaskResult, type UNetPlace,
} from './pipeline/attention_mask.ts';
export {
  refineMask, refineMaskWithFeatures, refineFolder, trainAffinityNet, uncertainBand, psaWalk, defaultBand, fineRefinement, type BandOptions,
  type WalkOptions, type RefineSample, type TrainOptions as AffinityTrainOptions, type RefineFolderOptions, type RefineFolderResult,
} from './pipeline/refine.ts';
export { generateSingleObject, type SingleObjectOptions, type SingleObjectResult } from './pipeline/single_object.ts';
export { generateDataset, mergeDatasets, readGenerateManifest, shardFromEnvironment, shapeWorldClassList, classListFromNames, generateStages, type GenerateStage, type GenerateOptions, type GenerateManifest, type GenerateClass, type ClassList } from './pipeline/generate.ts';
export { curate, classIous, keepSample, keepRules, type KeepRule, type CurateOptions, type CurateRound, type SampleScore } from './pipeline/curate.ts';
export { writeGallery, type GalleryItem } from './pipeline/gallery.ts';
export { normaliseClassName, makeThesaurus, thesaurusFromJson, vocThesaurus, shapeWorldThesaurus, cityscapesThesaurus, lookupClass, classesByBackground, drawWeighted, clipTextEmbedder, type Thesaurus, type BackgroundWeight, type ThesaurusMatch, type TextEmbedder } from './pipeline/thesaurus.ts';
export { ObPlaNet, obPlaNetConfig, obPlaNetResnet18, fopaInputs, type ObPlaNetConfig, type ObPlaNetOutput, type ObPlaNetForwardOptions } from './models/fopa.ts';
export { fopaScales, scaledSize, scaledForeground, placementHeatmaps, topPlacements, samplePlacement, placeObject, type Cutout, type ScaleHeatmap, type Placement, type PlacementOptions } from './pipeline/placement.ts';
export { composeLayers, placeCutout, cutOut, harmonizePasted, composeScenes, readSingleObjects, type SingleObject, type ComposeDatasetOptions, type Layer as CompositionLayer, type Composite, type ComposedInstance, type ComposeOptions } from './pipeline/compose.ts';
export { placementSample, fopaTask, evaluatePlacement, placementSheet, type PlacementSample, type PlacementEvaluation, type PlacementLabelOptions } from './train/fopa.ts';
export { RainNet, RAIN, rainNetConfig, harmonize, type RainNetConfig } from './models/rainnet.ts';
export { harmonizationPair, reinhardHarmonize, harmonizationScores, harmonizationTable, harmonizationSheet, rainNetHarmonizer, pctNetHarmonizer, harmonizerFromName, type Harmonizer, rgbToLab, labToRgb, type HarmonizationPair, type HarmonizationScores } from './pipeline/harmonize.ts';
export { rainNetPair, rainNetTask, pctNetTask } from './train/harmonizer.ts';
export { pctTransform, pct, pctParamCount, PCTNet, pctNetConfig, maskWeightedMse, type PctTransformType, type PctOptions, type PCTNetConfig, type PCTNetOutput, type PCTNetForwardOptions } from './models/pct_net.ts';
export { PathIndex, searchPaths, edgeToAffinity, affinityDense, propagateToEdge, type SearchPath } from './models/irn/indexing.ts';
export { findCentroids, findCentroidsWithRefinement, clusterCentroids, connectedComponents, makeInsSegLabels, makeSemSegLabels, type IrnMaps, type Detection, type InstanceOptions as IrnInstanceOptions } from './models/irn/centroids.ts';
export { IrnBranches, resnet50Inputs, type IrnInputs } from './models/irn/heads.ts';
export { IrnNet, parseIrnConfig, irnConfigJson, type IrnConfig } from './models/irn/model.ts';
export { pairLabels, boundaryAffinities, pairDisplacement, irnLosses, irnLossesFromLogits, type PairLabels, type IrnLosses } from './models/irn/losses.ts';
export { instancesFromSemantic, objectMap, predictedSemantic, evaluateInstances, addInstancesToFolder, instanceMethods, type InstanceMethod, type SemanticImage } from './pipeline/instances.ts';
export { irnTask, fitMeanShift } from './train/instances.ts';
export { modelCardMarkdown, type ModelCard } from './train/model_card.ts';
