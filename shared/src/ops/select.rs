//! Choosing, renaming, swapping and casting state-dict entries.

use super::ema::EMA_PREFIX;
use super::{Entry, Working};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::components::{classify, Component};
use crate::recipe::Layout;
use globset::{GlobBuilder, GlobMatcher};

fn glob(pattern: &str) -> Result<GlobMatcher> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::recipe(format!("bad pattern '{pattern}': {e}")))
}

/// Keep only keys matching `pattern` (`*` matches dots too).
pub fn keep_matching(work: &mut Working, pattern: &str) -> Result<usize> {
    let g = glob(pattern)?;
    let before = work.state_dict.len();
    work.state_dict.retain(|k, _| g.is_match(k));
    Ok(before - work.state_dict.len())
}

/// Drop keys matching `pattern`.
pub fn drop_matching(work: &mut Working, pattern: &str) -> Result<usize> {
    let g = glob(pattern)?;
    let before = work.state_dict.len();
    work.state_dict.retain(|k, _| !g.is_match(k));
    Ok(before - work.state_dict.len())
}

/// Rename keys starting with `from` to start with `to` instead; refuses collisions.
pub fn rename_prefix(work: &mut Working, from: &str, to: &str) -> Result<usize> {
    let mut renamed = 0;
    let old = std::mem::take(&mut work.state_dict);
    for (k, e) in old {
        let key = match k.strip_prefix(from) {
            Some(rest) => {
                renamed += 1;
                format!("{to}{rest}")
            }
            None => k,
        };
        if work.state_dict.insert(key.clone(), e).is_some() {
            return Err(Error::op(format!("renaming makes '{key}' appear twice")));
        }
    }
    Ok(renamed)
}

/// The key prefix a component has in an original-layout checkpoint.
fn ldm_prefix(component: Component) -> Option<&'static str> {
    Some(match component {
        Component::Unet => "model.diffusion_model.",
        Component::Vae => "first_stage_model.",
        Component::TextEncoder => "cond_stage_model.",
        _ => return None,
    })
}

/// `from`'s tensors in the original layout: a diffusers model is converted; a file holding
/// one component under its own names (an A1111 VAE `encoder.*`, a diffusers VAE
/// `encoder.down_blocks.*`, a CLIP `text_model.*`, a bare UNet) gets its component's place.
fn in_ldm_layout(from: &Working, component: Component) -> Result<Working> {
    let mut from = from.clone();
    if crate::layout::is_diffusers(&from) {
        crate::layout::convert(&mut from, Layout::Ldm)?;
        return Ok(from);
    }
    let own: Vec<(String, Entry)> = from
        .state_dict
        .iter()
        .filter(|(k, _)| classify(k) == component && !k.starts_with(EMA_PREFIX))
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect();
    let diffusers_names = own.iter().any(|(k, _)| {
        ["down_blocks.", "up_blocks.", "mid_block."]
            .iter()
            .any(|p| k.contains(p))
    });
    let ldm_prefix = ldm_prefix(component).expect("checked by the caller");
    let (prefix, convert) = match component {
        Component::TextEncoder => ("text_encoder.", true),
        Component::Vae | Component::Unet if diffusers_names => (
            if component == Component::Vae {
                "vae."
            } else {
                "unet."
            },
            true,
        ),
        _ => (ldm_prefix, false),
    };
    let mut only = Working::default();
    for (k, e) in own {
        // A CLIP file saved without the `text_model.` level (old transformers).
        let k = if component == Component::TextEncoder && !k.starts_with("text_model.") {
            format!("text_model.{k}")
        } else {
            k
        };
        only.state_dict.insert(format!("{prefix}{k}"), e);
    }
    if convert {
        crate::layout::convert(&mut only, Layout::Ldm)?;
    }
    Ok(only)
}

/// Replace `component` of `work` with the one in `from` (bake a VAE in, take the text
/// encoder from another model). Returns how many tensors came in.
pub fn swap_component(work: &mut Working, from: &Working, component: Component) -> Result<usize> {
    let prefix = ldm_prefix(component)
        .ok_or_else(|| Error::recipe(format!("cannot swap the {}", component.name())))?;
    if crate::layout::is_diffusers(work) {
        return Err(Error::op(
            "swap works on original-layout checkpoints; convert to ldm first",
        ));
    }
    let take = |w: &Working| -> Vec<(String, Entry)> {
        w.state_dict
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    };
    let mut incoming = take(from);
    if incoming.is_empty() {
        incoming = take(&in_ldm_layout(from, component)?);
    }
    if incoming.is_empty() {
        return Err(Error::op(format!("has no {} to take", component.name())));
    }
    work.state_dict.retain(|k, _| !k.starts_with(prefix));
    let n = incoming.len();
    work.state_dict.extend(incoming);
    Ok(n)
}

/// Cast floating-point tensors to `dtype`; integer tensors (CLIP's `position_ids`) stay.
pub fn cast(work: &mut Working, dtype: DType) -> Result<usize> {
    if !matches!(dtype, DType::Float16 | DType::BFloat16 | DType::Float32) {
        return Err(Error::recipe(format!(
            "cast to {} is not supported (f16, bf16, f32)",
            dtype.torch_name()
        )));
    }
    let mut n = 0;
    for e in work.state_dict.values_mut() {
        if e.tensor.dtype.is_float() && e.tensor.dtype != dtype {
            if e.tensor.dtype.bits() < 16 {
                return Err(Error::op(format!(
                    "cannot cast {} tensors",
                    e.tensor.dtype.torch_name()
                )));
            }
            e.tensor = e.tensor.cast(dtype);
            e.origin = None;
            n += 1;
        }
    }
    Ok(n)
}
