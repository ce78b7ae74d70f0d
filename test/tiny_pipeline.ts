// A tiny random-weight Stable Diffusion written as a diffusers folder, for tests of the commands that run one.
import { manualSeed } from '../src/engine/random-cpu.ts';
import { saveSafetensors } from '../src/io/safetensors.ts';
import { AutoencoderKL, autoencoderConfig, autoencoderConfigJson } from '../src/models/autoencoder_kl.ts';
import { CLIPTextModel, clipTextConfig } from '../src/models/clip_text_model.ts';
import { CLIPTokenizer } from '../src/models/clip_tokenizer.ts';
import { ConfigReader } from '../src/models/pretrained.ts';
import { UNet2DConditionModel, unetConfig } from '../src/models/unet_2d_condition.ts';
import { saveTextToImagePipeline } from '../src/train/text_to_image.ts';

/** A diffusers folder: VAE with 3 levels (64² → 16² latents, as the zoo's), a UNet with cross-attention at 16² and 8², a 1-layer CLIP. */
export async function writeTinyStableDiffusion(model: string): Promise<void> {
  const fs = process.getBuiltinModule('node:fs');
  manualSeed(5);
  const vae = new AutoencoderKL(autoencoderConfig(new ConfigReader({
    in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [8, 8, 16], layers_per_block: 1, norm_num_groups: 4,
    down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  }, 'tiny VAE')));
  fs.mkdirSync(`${model}/vae`, { recursive: true });
  fs.writeFileSync(`${model}/vae/config.json`, JSON.stringify(autoencoderConfigJson({ ...vae.config, scaling_factor: 0.5 }, 64)));
  await saveSafetensors(`${model}/vae/diffusion_pytorch_model.safetensors`, vae.stateDict(), { format: 'pt' });
  const unetJson = {
    sample_size: 16, in_channels: 4, out_channels: 4, block_out_channels: [16, 32], layers_per_block: 1, attention_head_dim: 2, cross_attention_dim: 16, norm_num_groups: 8,
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'], up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  };
  const clipJson = { vocab_size: 49408, hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, max_position_embeddings: 24, hidden_act: 'quick_gelu' };
  const unet = new UNet2DConditionModel(unetConfig(new ConfigReader(unetJson, 'tiny UNet')));
  const text = new CLIPTextModel(clipTextConfig(clipJson));
  const weights = { ...Object.fromEntries(Object.entries(unet.stateDict()).map(([k, t]) => [`unet.${k}`, t])), ...Object.fromEntries(Object.entries(text.stateDict()).map(([k, t]) => [`text_encoder.${k}`, t])) };
  const tokenizer = await CLIPTokenizer.fromPretrained(undefined, { maxLength: 24 });
  await saveTextToImagePipeline(model, { unetConfig: unetJson, textEncoderConfig: { architectures: ['CLIPTextModel'], ...clipJson }, weights, tokenizer });
  for (const m of [vae, unet, text]) m.dispose();
}
