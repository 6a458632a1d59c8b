//! Components of an SD checkpoint, by tensor name.

use serde::Serialize;

/// A part of a checkpoint users think about separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
    /// SDXL's second text encoder (OpenCLIP bigG).
    TextEncoder2,
    /// LitEma's shadow weights (`model_ema.diffusion_modelinput_blocks00weight`) and buffers.
    Ema,
    /// Optimizer state (`optimizer_states/...`: AdamW `exp_avg`, `exp_avg_sq`, `step`).
    Optimizer,
    /// The diffusion schedule buffers (`betas`, `alphas_cumprod`, ... `logvar`).
    Schedule,
    Other,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
            Component::Ema => "ema",
            Component::Optimizer => "optimizer",
            Component::Schedule => "schedule",
            Component::Other => "other",
        }
    }
}

/// The LDM DDPM schedule buffers registered on the LatentDiffusion module.
pub const SCHEDULE_BUFFERS: &[&str] = &[
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
];

/// The state-dict key inside a tensor path: `state_dict/<key>` in Lightning files, the whole
/// name in a bare state dict, `None` for tensors elsewhere (optimizer state, callbacks).
pub fn state_dict_key(name: &str) -> Option<&str> {
    if let Some(rest) = name.strip_prefix("state_dict/") {
        return Some(rest.strip_prefix("state_dict/").unwrap_or(rest));
    }
    for wrapper in ["model/", "module/", "params/", "params_ema/"] {
        if let Some(rest) = name.strip_prefix(wrapper) {
            if !rest.contains('/') {
                return Some(rest);
            }
        }
    }
    (!name.contains('/')).then_some(name)
}

/// Which component a tensor (by full path name) belongs to.
pub fn classify(name: &str) -> Component {
    if name.starts_with("optimizer_states/") || name.starts_with("optimizer/") {
        return Component::Optimizer;
    }
    let Some(key) = state_dict_key(name) else {
        return Component::Other;
    };
    const PREFIXES: &[(&str, Component)] = &[
        ("model.diffusion_model.", Component::Unet),
        ("model_ema.", Component::Ema),
        ("first_stage_model.", Component::Vae),
        ("cond_stage_model.", Component::TextEncoder),
        ("conditioner.embedders.0.", Component::TextEncoder),
        ("conditioner.embedders.1.", Component::TextEncoder2),
        // ldmkit's names for a diffusers folder's files (`unet/...` becomes `unet.`).
        ("unet.", Component::Unet),
        ("vae.", Component::Vae),
        ("text_encoder.", Component::TextEncoder),
        ("text_encoder_2.", Component::TextEncoder2),
        // Files holding one component in its own naming (diffusers / transformers / VAE-only).
        ("text_model.", Component::TextEncoder),
        ("encoder.", Component::Vae),
        ("decoder.", Component::Vae),
        ("quant_conv.", Component::Vae),
        ("post_quant_conv.", Component::Vae),
        ("down_blocks.", Component::Unet),
        ("up_blocks.", Component::Unet),
        ("mid_block.", Component::Unet),
        ("conv_in.", Component::Unet),
        ("conv_out.", Component::Unet),
        ("conv_norm_out.", Component::Unet),
        ("time_embedding.", Component::Unet),
        ("add_embedding.", Component::Unet),
    ];
    if let Some(&(_, c)) = PREFIXES.iter().find(|(p, _)| key.starts_with(p)) {
        return c;
    }
    if SCHEDULE_BUFFERS.contains(&key) {
        return Component::Schedule;
    }
    Component::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(
            classify("state_dict/model.diffusion_model.out.2.weight"),
            Component::Unet
        );
        assert_eq!(
            classify("state_dict/model_ema.diffusion_modelinput_blocks00weight"),
            Component::Ema
        );
        assert_eq!(classify("state_dict/model_ema.decay"), Component::Ema);
        assert_eq!(
            classify("optimizer_states/0/state/12/exp_avg"),
            Component::Optimizer
        );
        assert_eq!(classify("state_dict/betas"), Component::Schedule);
        assert_eq!(
            classify("first_stage_model.encoder.conv_in.weight"),
            Component::Vae
        );
        assert_eq!(
            classify("conditioner.embedders.1.model.ln_final.weight"),
            Component::TextEncoder2
        );
        assert_eq!(classify("callbacks/x/best_model_score"), Component::Other);
    }
}
