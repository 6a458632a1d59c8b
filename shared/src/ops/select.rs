//! Choosing, renaming, swapping and casting state-dict entries.

use super::{Entry, Working};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::components::{classify, Component};
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

/// Replace `component` of `work` with the one in `from` (bake a VAE in, take the text
/// encoder from another model). `from` may be a whole checkpoint or a file holding only
/// that component in original naming (an A1111 VAE: `encoder.*`, `decoder.*`, ...).
/// Returns how many tensors came in.
pub fn swap_component(work: &mut Working, from: &Working, component: Component) -> Result<usize> {
    let prefix = ldm_prefix(component)
        .ok_or_else(|| Error::recipe(format!("cannot swap the {}", component.name())))?;
    let diffusers = work.state_dict.keys().any(|k| k.starts_with("unet."));
    if diffusers {
        return Err(Error::op(
            "swap works on original-layout checkpoints; convert to ldm first",
        ));
    }
    let mut incoming: Vec<(String, Entry)> = from
        .state_dict
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect();
    if incoming.is_empty() {
        // A component-only file: its keys classify as the component without the prefix.
        incoming = from
            .state_dict
            .iter()
            .filter(|(k, _)| classify(k) == component && !k.starts_with("model_ema."))
            .map(|(k, e)| (format!("{prefix}{k}"), e.clone()))
            .collect();
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
