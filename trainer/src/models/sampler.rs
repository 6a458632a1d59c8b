//! Text to image with the model's own networks: CLIP text states, DDIM (candle-transformers'
//! scheduler, SD's scaled-linear betas) with classifier-free guidance, and the VAE decoder.
//! What training previews and `ldmkit sample` draw with.

use super::clip::{ClipConfig, ClipTextModel};
use super::load::{ModelFile, Part};
use super::one_line as err;
use super::unet::{Unet, UnetConfig};
use super::vae_encoder::VaeConfig;
use crate::text::tokenizer::{ClipTokenizer, CONTEXT};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::stable_diffusion::ddim::DDIMSchedulerConfig;
use candle_transformers::models::stable_diffusion::schedulers::{PredictionType, SchedulerConfig};
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::StandardNormal;

pub struct Sampler {
    clip: ClipTextModel,
    unet: Unet,
    vae: AutoEncoderKL,
    vae_config: VaeConfig,
    tokenizer: ClipTokenizer,
    device: Device,
    dtype: DType,
    clip_skip: usize,
}

/// One request.
pub struct Request<'a> {
    pub prompt: &'a str,
    pub negative: &'a str,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub guidance: f64,
    pub seed: u64,
    /// The UNet predicts v (SD 2.x 768-v) rather than the noise.
    pub v_prediction: bool,
}

impl Sampler {
    pub fn load(
        model: &ModelFile,
        tokenizer: ClipTokenizer,
        device: &Device,
        dtype: DType,
        clip_skip: usize,
    ) -> Result<Sampler, String> {
        let clip_config = ClipConfig::from_json(&model.config(Part::TextEncoder)?)?;
        let clip = model
            .weights(Part::TextEncoder, &["text_model."], dtype, device)?
            .build(dtype, device, |vb| ClipTextModel::new(vb, clip_config))?;
        let unet_config = UnetConfig::from_json(&model.config(Part::Unet)?)?;
        let unet = model
            .weights(Part::Unet, &[], dtype, device)?
            .build(dtype, device, |vb| Unet::new(vb, unet_config))?;
        let vae_config = VaeConfig::from_json(&model.config(Part::Vae)?)?;
        let kl = AutoEncoderKLConfig {
            block_out_channels: vae_config.block_out_channels.clone(),
            layers_per_block: vae_config.layers_per_block,
            latent_channels: vae_config.latent_channels,
            norm_num_groups: vae_config.norm_num_groups,
            use_quant_conv: true,
            use_post_quant_conv: true,
        };
        let vae = model
            .weights(Part::Vae, &[], dtype, device)?
            .build(dtype, device, |vb| AutoEncoderKL::new(vb, 3, 3, kl))?;
        Ok(Sampler {
            clip,
            unet,
            vae,
            vae_config,
            tokenizer,
            device: device.clone(),
            dtype,
            clip_skip,
        })
    }

    fn text(&self, captions: &[&str]) -> Result<Tensor, String> {
        let mut ids = Vec::with_capacity(captions.len() * CONTEXT);
        for c in captions {
            ids.extend(self.tokenizer.encode(c)?.ids);
        }
        let ids = Tensor::from_vec(ids, (captions.len(), CONTEXT), &self.device).map_err(err)?;
        self.clip.forward(&ids, self.clip_skip).map_err(err)
    }

    /// An RGB image, `height × width × 3` bytes; `step` is told each finished step.
    pub fn sample(&self, r: &Request, mut step: impl FnMut(usize)) -> Result<Vec<u8>, String> {
        let down = self.vae_config.downscale();
        if r.width % (8 * down) != 0 || r.height % (8 * down) != 0 {
            return Err(format!(
                "width and height must be multiples of {}",
                8 * down
            ));
        }
        let text = self.text(&[r.negative, r.prompt])?;
        let config = DDIMSchedulerConfig {
            prediction_type: if r.v_prediction {
                PredictionType::VPrediction
            } else {
                PredictionType::Epsilon
            },
            ..Default::default()
        };
        let mut scheduler = config.build(r.steps).map_err(err)?;
        // Noise from a seeded generator on the host, so a seed gives the same image on any
        // device.
        let shape = (
            1,
            self.vae_config.latent_channels,
            r.height / down,
            r.width / down,
        );
        let mut rng = StdRng::seed_from_u64(r.seed);
        let noise: Vec<f32> = (0..shape.1 * shape.2 * shape.3)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        let mut latents = (Tensor::from_vec(noise, shape, &self.device).map_err(err)?
            * scheduler.init_noise_sigma())
        .and_then(|t| t.to_dtype(self.dtype))
        .map_err(err)?;
        let timesteps = scheduler.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let input = Tensor::cat(&[&latents, &latents], 0).map_err(err)?;
            let input = scheduler.scale_model_input(input, t).map_err(err)?;
            let noise = self.unet.forward(&input, t as f64, &text).map_err(err)?;
            let parts = noise.chunk(2, 0).map_err(err)?;
            let guided = (&parts[0]
                + ((&parts[1] - &parts[0]).map_err(err)? * r.guidance).map_err(err)?)
            .map_err(err)?;
            latents = scheduler.step(&guided, t, &latents).map_err(err)?;
            step(i + 1);
        }
        let image = self
            .vae
            .decode(&(latents / self.vae_config.scaling_factor).map_err(err)?)
            .map_err(err)?;
        let image = ((image.to_dtype(DType::F32).map_err(err)? / 2.0)
            .and_then(|t| t + 0.5)
            .and_then(|t| t.clamp(0f32, 1f32))
            .and_then(|t| t * 255.0))
        .map_err(err)?;
        let hwc = image
            .squeeze(0)
            .and_then(|t| t.permute((1, 2, 0)))
            .and_then(|t| t.round())
            .and_then(|t| t.to_dtype(DType::U8))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<u8>())
            .map_err(err)?;
        Ok(hwc)
    }
}
