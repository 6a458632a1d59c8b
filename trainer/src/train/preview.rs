//! Preview images during training: the run's sample prompts (pre-encoded into the data
//! folder's extras) drawn with the current UNet — DDIM with classifier-free guidance against
//! the empty caption — and the base model's VAE decoder, as one PNG grid per preview.
//!
//! The VAE is loaded for each preview and dropped after it, so it never shares the GPU
//! with a training step; the noise is seeded per prompt, so successive grids show the
//! model changing, not the noise.

use super::nn::params::View;
use super::nn::recompute::Plain;
use super::unet::Unet;
use crate::models::load::ModelFile;
use crate::models::one_line;
use crate::models::sampler::{decode, denoise, load_vae, seeded_noise, Guided};
use candle_core::{DType, Device, Tensor};
use std::path::Path;

pub struct Preview {
    /// `[n, 77, width]`.
    pub prompts: Tensor,
    /// `[1, 77, width]`.
    pub empty: Tensor,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub guidance: f64,
    pub v_prediction: bool,
    pub seed: u64,
}

/// Images per grid row.
const COLUMNS: usize = 4;

impl Preview {
    /// Draw every prompt with `unet` on `view` and write the grid to `path` (PNG).
    pub fn draw(
        &self,
        model: &ModelFile,
        unet: &Unet,
        view: &View,
        device: &Device,
        path: &Path,
    ) -> Result<(), String> {
        let n = self.prompts.dim(0).map_err(one_line)?;
        let (vae, vae_config) = load_vae(model, device, DType::F32)?;
        let down = vae_config.downscale();
        let (lw, lh) = (self.width / down, self.height / down);
        let mut images = Vec::with_capacity(n);
        for i in 0..n {
            let cond = self.prompts.narrow(0, i, 1).map_err(one_line)?;
            let text = Tensor::cat(&[&self.empty, &cond], 0)
                .and_then(|t| t.to_device(device))
                .map_err(one_line)?;
            let noise = seeded_noise(
                (1, vae_config.latent_channels, lh, lw),
                &[self.seed + i as u64],
                device,
            )?;
            let guided = Guided {
                steps: self.steps,
                guidance: self.guidance,
                v_prediction: self.v_prediction,
                dtype: view.dtype,
            };
            let latents = denoise(
                &guided,
                noise,
                &text,
                |input, t, text| {
                    let ts = Tensor::full(t as f32, input.dim(0)?, input.device())?;
                    unet.forward(view, input, &ts, text, &mut Plain)
                },
                &mut |_| {},
            )?;
            let latents = latents.to_dtype(DType::F32).map_err(one_line)?;
            images.extend(decode(&vae, &vae_config, &latents)?);
        }
        let (w, h) = (self.width as u32, self.height as u32);
        let cols = n.clamp(1, COLUMNS) as u32;
        let rows = n.div_ceil(COLUMNS).max(1) as u32;
        let mut grid = image::RgbImage::new(cols * w, rows * h);
        for (i, pixels) in images.into_iter().enumerate() {
            let tile = image::RgbImage::from_raw(w, h, pixels)
                .ok_or("decoded image has the wrong size")?;
            let (x, y) = ((i as u32 % cols) * w, (i as u32 / cols) * h);
            image::imageops::replace(&mut grid, &tile, x as i64, y as i64);
        }
        let tmp = path.with_extension("png.tmp");
        grid.save_with_format(&tmp, image::ImageFormat::Png)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }
}
