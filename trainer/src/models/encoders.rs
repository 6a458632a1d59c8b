//! The VAE encoder, text encoder and tokenizer together: what pre-encoding runs per batch.

use super::clip::{ClipConfig, ClipTextModel};
use super::load::{ModelFile, Part};
use super::vae_encoder::{VaeConfig, VaeEncoder, ENCODER_KEYS};
use crate::data::buckets::Size;
use crate::text::tokenizer::{ClipTokenizer, CONTEXT};
use candle_core::{DType, Device, Tensor};

pub struct Encoders {
    pub vae: VaeEncoder,
    pub clip: ClipTextModel,
    pub tokenizer: ClipTokenizer,
    pub device: Device,
    /// Compute dtype.
    pub dtype: DType,
    /// Stored dtype.
    pub store: DType,
    pub clip_skip: usize,
}

use super::one_line as err;

impl Encoders {
    pub fn load(
        model: &ModelFile,
        tokenizer: ClipTokenizer,
        device: &Device,
        dtype: DType,
        store: DType,
        clip_skip: usize,
    ) -> Result<Encoders, String> {
        let vae_config = VaeConfig::from_json(&model.config(Part::Vae)?)?;
        let vae = model
            .weights(Part::Vae, ENCODER_KEYS, dtype, device)?
            .build(dtype, device, |vb| VaeEncoder::new(vb, vae_config))?;
        let clip_config = ClipConfig::from_json(&model.config(Part::TextEncoder)?)?;
        if clip_skip == 0 || clip_skip > clip_config.num_hidden_layers {
            return Err(format!(
                "--clip-skip {clip_skip}: the text encoder has {} layers (1 = the last)",
                clip_config.num_hidden_layers
            ));
        }
        let clip = model
            .weights(Part::TextEncoder, &["text_model."], dtype, device)?
            .build(dtype, device, |vb| ClipTextModel::new(vb, clip_config))?;
        Ok(Encoders {
            vae,
            clip,
            tokenizer,
            device: device.clone(),
            dtype,
            store,
            clip_skip,
        })
    }

    /// `count` images `[3, h, w]` (flattened, in [-1, 1]) → posterior mean and std on the CPU
    /// in the stored dtype.
    pub fn images(
        &self,
        pixels: &[f32],
        count: usize,
        size: Size,
    ) -> Result<(Tensor, Tensor), String> {
        let shape = (count, 3, size.height as usize, size.width as usize);
        let x = Tensor::from_slice(pixels, shape, &Device::Cpu)
            .and_then(|t| t.to_device(&self.device))
            .and_then(|t| t.to_dtype(self.dtype))
            .map_err(err)?;
        let (mean, std) = self.vae.encode(&x).map_err(err)?;
        let out = |t: Tensor| t.to_dtype(self.store)?.to_device(&Device::Cpu);
        Ok((out(mean).map_err(err)?, out(std).map_err(err)?))
    }

    /// Captions → text states `[n, 77, width]` on the CPU in the stored dtype, and which
    /// captions were cut to fit.
    pub fn texts(&self, captions: &[&str]) -> Result<(Tensor, Vec<bool>), String> {
        let mut ids = Vec::with_capacity(captions.len() * CONTEXT);
        let mut truncated = Vec::with_capacity(captions.len());
        for c in captions {
            let e = self.tokenizer.encode(c)?;
            truncated.push(e.truncated);
            ids.extend(e.ids);
        }
        let ids = Tensor::from_vec(ids, (captions.len(), CONTEXT), &self.device).map_err(err)?;
        let states = self.clip.forward(&ids, self.clip_skip).map_err(err)?;
        let states = states
            .to_dtype(self.store)
            .and_then(|t| t.to_device(&Device::Cpu))
            .map_err(err)?;
        Ok((states, truncated))
    }

    pub fn text_width(&self) -> usize {
        self.clip.config.hidden_size
    }
}
