//! LitEma weights: drop them, keep them, or put them in place of the model's.
//!
//! LitEma (CompVis `ldm/modules/ema.py`) stores one shadow buffer per trainable parameter,
//! named `model_ema.` + the parameter name after `model.` with every dot removed
//! (`model.diffusion_model.input_blocks.0.0.weight` → `model_ema.diffusion_modelinput_blocks00weight`),
//! plus `model_ema.decay` and `model_ema.num_updates`.

use super::Working;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// What to do with `model_ema.*` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmaMode {
    /// Remove them (a release carries one copy of the weights).
    Drop,
    /// Put the EMA weights in place of the model's, then remove them.
    Use,
    /// Keep them as they are.
    Keep,
}

impl EmaMode {
    pub fn name(self) -> &'static str {
        match self {
            EmaMode::Drop => "drop",
            EmaMode::Use => "use",
            EmaMode::Keep => "keep",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "drop" => EmaMode::Drop,
            "use" => EmaMode::Use,
            "keep" => EmaMode::Keep,
            _ => return None,
        })
    }
}

pub const EMA_PREFIX: &str = "model_ema.";

/// LitEma's buffer name for a model parameter, if the key is one (`model.` prefix).
pub fn ema_name(key: &str) -> Option<String> {
    let rest = key.strip_prefix("model.")?;
    Some(format!("{EMA_PREFIX}{}", rest.replace('.', "")))
}

/// Apply `mode`; returns how many model weights were replaced by EMA weights.
pub fn apply_ema(work: &mut Working, mode: EmaMode) -> Result<usize> {
    let mut swapped = 0;
    if mode == EmaMode::Use {
        let keys: Vec<String> = work.state_dict.keys().cloned().collect();
        for key in keys {
            let Some(ema) = ema_name(&key) else { continue };
            if let Some(e) = work.state_dict.get(&ema).cloned() {
                let target = &work.state_dict[&key];
                if target.tensor.shape != e.tensor.shape {
                    return Err(Error::op(format!(
                        "EMA weight '{ema}' has shape {:?} but '{key}' has {:?}",
                        e.tensor.shape, target.tensor.shape
                    )));
                }
                work.state_dict.insert(key, e);
                swapped += 1;
            }
        }
        if swapped == 0 {
            return Err(Error::op(
                "has no EMA weights (model_ema.* named after model.* keys) to use",
            ));
        }
    }
    if mode != EmaMode::Keep {
        work.state_dict.retain(|k, _| !k.starts_with(EMA_PREFIX));
    }
    Ok(swapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lit_ema_names() {
        assert_eq!(
            ema_name("model.diffusion_model.input_blocks.0.0.weight").unwrap(),
            "model_ema.diffusion_modelinput_blocks00weight"
        );
        assert_eq!(ema_name("first_stage_model.x"), None);
    }
}
