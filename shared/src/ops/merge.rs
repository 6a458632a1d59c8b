//! The seed's two whole-checkpoint moves: merge-back and graft.

use super::{Entry, Working};
use crate::error::{Error, Result};

/// Merge-back: add every key of `base` that `work` lacks (after the keys it has, in `base`'s
/// order). A training run that pre-encoded its captions has no text encoder; this restores
/// it from the release it started from. Returns how many keys were added.
///
/// A base whose tensors differ in shape from the ones `work` has is another model (an SD 1.x
/// release under an SD 2.x run, say): its text encoder and VAE would not fit the UNet, and the
/// file written would load and then draw noise, so that is refused. Dtypes may differ (an f32
/// run over an f16 release is the usual case).
pub fn fill_from(work: &mut Working, base: &Working) -> Result<usize> {
    let mut mismatched = base.state_dict.iter().filter_map(|(k, b)| {
        let e = work.state_dict.get(k)?;
        (e.tensor.shape != b.tensor.shape).then_some((k, &e.tensor.shape, &b.tensor.shape))
    });
    if let Some((k, here, there)) = mismatched.next() {
        return Err(Error::op(format!(
            "the base is another model: {} tensor(s) differ in shape ({k} is {here:?} here, \
             {there:?} in the base); merge with the release the training started from",
            1 + mismatched.count()
        )));
    }
    let mut added = 0;
    for (k, e) in &base.state_dict {
        if !work.state_dict.contains_key(k) {
            work.state_dict.insert(k.clone(), e.clone());
            added += 1;
        }
    }
    Ok(added)
}

/// What a graft did.
#[derive(Debug, Default)]
pub struct GraftReport {
    pub copied: usize,
    /// Keys of the training checkpoint that `base` does not have (kept as they were).
    pub kept: Vec<String>,
    /// Keys whose shape or dtype differ (copied anyway only when forced).
    pub mismatched: Vec<String>,
}

/// Graft: `base`'s weights into the training checkpoint `work` (whose optimizer state,
/// callbacks and hyper-parameters stay), except the text encoder (`cond_stage_model.*`).
/// Shape or dtype mismatches are refused unless `force`, which copies them anyway.
pub fn graft(work: &mut Working, base: &Working, force: bool) -> Result<GraftReport> {
    let mut report = GraftReport::default();
    let mut updates: Vec<(String, Entry)> = Vec::new();
    for (k, e) in &work.state_dict {
        if k.starts_with("cond_stage_model.") {
            continue;
        }
        let Some(b) = base.state_dict.get(k) else {
            report.kept.push(k.clone());
            continue;
        };
        if b.tensor.shape != e.tensor.shape || b.tensor.dtype != e.tensor.dtype {
            report.mismatched.push(format!(
                "{k}: {} {:?} in base, {} {:?} in training",
                b.tensor.dtype.torch_name(),
                b.tensor.shape,
                e.tensor.dtype.torch_name(),
                e.tensor.shape
            ));
            if !force {
                continue;
            }
        }
        updates.push((k.clone(), b.clone()));
    }
    if !report.mismatched.is_empty() && !force {
        let n = report.mismatched.len();
        return Err(Error::op(format!(
            "{n} tensor(s) differ in shape or dtype (use --force to copy anyway): {}{}",
            report.mismatched[..n.min(3)].join("; "),
            if n > 3 { "; ..." } else { "" }
        )));
    }
    report.copied = updates.len();
    for (k, e) in updates {
        work.state_dict.insert(k, e);
    }
    Ok(report)
}
