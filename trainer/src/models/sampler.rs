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
        let (vae, vae_config) = load_vae(model, device, dtype)?;
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
        let shape = (
            1,
            self.vae_config.latent_channels,
            r.height / down,
            r.width / down,
        );
        let noise = seeded_noise(shape, &[r.seed], &self.device)?;
        let latents = denoise(
            &Guided {
                steps: r.steps,
                guidance: r.guidance,
                v_prediction: r.v_prediction,
                dtype: self.dtype,
            },
            noise,
            &text,
            |input, t, text| self.unet.forward(input, t as f64, text),
            &mut step,
        )?;
        Ok(decode(&self.vae, &self.vae_config, &latents)?.remove(0))
    }
}

/// How to run DDIM with classifier-free guidance.
pub struct Guided {
    pub steps: usize,
    pub guidance: f64,
    pub v_prediction: bool,
    /// The UNet's compute dtype.
    pub dtype: DType,
}

/// Standard-normal latents `[n, c, h, w]` (f32) from one host generator per seed, so a seed
/// gives the same image on any device and in any batch.
pub fn seeded_noise(
    shape: (usize, usize, usize, usize),
    seeds: &[u64],
    device: &Device,
) -> Result<Tensor, String> {
    let per = shape.1 * shape.2 * shape.3;
    let mut noise = Vec::with_capacity(seeds.len() * per);
    for &seed in seeds {
        let mut rng = StdRng::seed_from_u64(seed);
        noise.extend((0..per).map(|_| rng.sample::<f32, _>(StandardNormal)));
    }
    Tensor::from_vec(noise, (seeds.len(), shape.1, shape.2, shape.3), device).map_err(err)
}

/// DDIM from `noise` `[n, c, h, w]` with guidance; `text` is `[2n, 77, width]`, the n
/// unconditional states first. `unet(input [2n, ...], timestep, text)` predicts; `step` is
/// told each finished step. Returns the final latents (unscaled by the VAE factor).
pub fn denoise(
    g: &Guided,
    noise: Tensor,
    text: &Tensor,
    mut unet: impl FnMut(&Tensor, usize, &Tensor) -> candle_core::Result<Tensor>,
    step: &mut dyn FnMut(usize),
) -> Result<Tensor, String> {
    let config = DDIMSchedulerConfig {
        prediction_type: if g.v_prediction {
            PredictionType::VPrediction
        } else {
            PredictionType::Epsilon
        },
        ..Default::default()
    };
    let mut scheduler = config.build(g.steps).map_err(err)?;
    let mut latents = (noise * scheduler.init_noise_sigma())
        .and_then(|t| t.to_dtype(g.dtype))
        .map_err(err)?;
    let text = text.to_dtype(g.dtype).map_err(err)?;
    let timesteps = scheduler.timesteps().to_vec();
    for (i, &t) in timesteps.iter().enumerate() {
        let input = Tensor::cat(&[&latents, &latents], 0).map_err(err)?;
        let input = scheduler.scale_model_input(input, t).map_err(err)?;
        let noise = unet(&input, t, &text).map_err(err)?;
        let parts = noise.chunk(2, 0).map_err(err)?;
        let guided = (&parts[0]
            + ((&parts[1] - &parts[0]).map_err(err)? * g.guidance).map_err(err)?)
        .map_err(err)?;
        latents = scheduler.step(&guided, t, &latents).map_err(err)?;
        step(i + 1);
    }
    Ok(latents)
}

/// Decode latents `[n, c, h, w]` to RGB images, `h·8 × w·8 × 3` bytes each.
pub fn decode(
    vae: &AutoEncoderKL,
    config: &VaeConfig,
    latents: &Tensor,
) -> Result<Vec<Vec<u8>>, String> {
    let image = vae
        .decode(&(latents / config.scaling_factor).map_err(err)?)
        .map_err(err)?;
    let image = ((image.to_dtype(DType::F32).map_err(err)? / 2.0)
        .and_then(|t| t + 0.5)
        .and_then(|t| t.clamp(0f32, 1f32))
        .and_then(|t| t * 255.0))
    .map_err(err)?;
    (0..image.dim(0).map_err(err)?)
        .map(|i| {
            image
                .get(i)
                .and_then(|t| t.permute((1, 2, 0)))
                .and_then(|t| t.round())
                .and_then(|t| t.to_dtype(DType::U8))
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<u8>())
                .map_err(err)
        })
        .collect()
}

/// The model's VAE (decoder used) and its config.
pub fn load_vae(
    model: &ModelFile,
    device: &Device,
    dtype: DType,
) -> Result<(AutoEncoderKL, VaeConfig), String> {
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
    Ok((vae, vae_config))
}
