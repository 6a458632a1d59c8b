//! How two checkpoints differ: keys only in one, shape or dtype changes, and per tensor the
//! relative change ‖A−B‖/‖A‖, summarised per component and per UNet block.

use super::CHUNK;
use crate::error::Result;
use crate::model::components::classify;
use crate::ops::Working;
use crate::plan::ElementReader;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// One tensor present in both with the same shape.
#[derive(Debug, Clone, Serialize)]
pub struct TensorChange {
    pub name: String,
    pub component: String,
    /// `‖A−B‖ / ‖A‖` (infinite when A is all zeros and B is not).
    pub relative: f64,
    pub max_abs: f64,
}

/// Changes aggregated over a group of tensors: `sqrt(Σ‖A−B‖²) / sqrt(Σ‖A‖²)`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupChange {
    pub name: String,
    pub tensors: usize,
    pub changed: usize,
    pub relative: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    /// `name: what changed` for tensors whose shape or dtype differ.
    pub mismatched: Vec<String>,
    pub identical: usize,
    pub tensors: Vec<TensorChange>,
    pub components: Vec<GroupChange>,
    pub unet_blocks: Vec<GroupChange>,
}

/// The UNet block a key belongs to (`input_blocks.4`, `middle_block`, `up_blocks.2`, ...).
pub fn unet_block(key: &str) -> Option<String> {
    let rest = key
        .strip_prefix("model.diffusion_model.")
        .or_else(|| key.strip_prefix("unet."))?;
    let mut parts = rest.split('.');
    let first = parts.next()?;
    Some(match first {
        "input_blocks" | "output_blocks" | "down_blocks" | "up_blocks" => {
            format!("{first}.{}", parts.next()?)
        }
        other => other.to_string(),
    })
}

#[derive(Default)]
struct Sums {
    tensors: usize,
    changed: usize,
    diff2: f64,
    a2: f64,
}

impl Sums {
    fn group(&self, name: &str) -> GroupChange {
        GroupChange {
            name: name.to_string(),
            tensors: self.tensors,
            changed: self.changed,
            relative: ratio(self.diff2.sqrt(), self.a2.sqrt()),
        }
    }
}

fn ratio(num: f64, den: f64) -> f64 {
    if num == 0.0 {
        0.0
    } else if den == 0.0 {
        f64::INFINITY
    } else {
        num / den
    }
}

/// Compare the state dicts of `a` and `b`; `progress(done, total)` is told after each tensor.
pub fn diff(
    reader: &mut ElementReader<'_>,
    a: &Working,
    b: &Working,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<DiffReport> {
    let only_in_a = a
        .state_dict
        .keys()
        .filter(|k| !b.state_dict.contains_key(*k))
        .cloned()
        .collect();
    let only_in_b = b
        .state_dict
        .keys()
        .filter(|k| !a.state_dict.contains_key(*k))
        .cloned()
        .collect();
    let mut report = DiffReport {
        only_in_a,
        only_in_b,
        mismatched: Vec::new(),
        identical: 0,
        tensors: Vec::new(),
        components: Vec::new(),
        unet_blocks: Vec::new(),
    };
    let mut components: BTreeMap<String, Sums> = BTreeMap::new();
    let mut blocks: Vec<(String, Sums)> = Vec::new();
    let total = a.state_dict.len();
    for (i, (name, ea)) in a.state_dict.iter().enumerate() {
        progress(i, total);
        let Some(eb) = b.state_dict.get(name) else {
            continue;
        };
        let (ta, tb) = (&ea.tensor, &eb.tensor);
        if ta.shape != tb.shape || ta.dtype != tb.dtype {
            report.mismatched.push(format!(
                "{name}: {} {:?} -> {} {:?}",
                ta.dtype.torch_name(),
                ta.shape,
                tb.dtype.torch_name(),
                tb.shape
            ));
            if ta.shape != tb.shape {
                continue;
            }
        }
        let (mut d2, mut a2, mut max_abs) = (0.0f64, 0.0f64, 0.0f64);
        if !ta.same_bytes(tb) {
            let numel = ta.numel();
            let mut start = 0;
            while start < numel {
                let count = (numel - start).min(CHUNK);
                let va = reader.read_values(ta, start, count)?;
                let vb = reader.read_values(tb, start, count)?;
                for (x, y) in va.iter().zip(&vb) {
                    let d = x - y;
                    d2 += d * d;
                    a2 += x * x;
                    max_abs = max_abs.max(d.abs());
                }
                start += count;
            }
        }
        let changed = d2 != 0.0 || d2.is_nan();
        report.identical += usize::from(!changed);
        let component = classify(name).name().to_string();
        for sums in [
            Some(components.entry(component.clone()).or_default()),
            unet_block(name).map(|blk| {
                if blocks.last().is_none_or(|(b, _)| *b != blk) {
                    blocks.push((blk, Sums::default()));
                }
                &mut blocks.last_mut().expect("pushed").1
            }),
        ]
        .into_iter()
        .flatten()
        {
            sums.tensors += 1;
            sums.changed += usize::from(changed);
            sums.diff2 += d2;
            sums.a2 += a2;
        }
        report.tensors.push(TensorChange {
            name: name.clone(),
            component,
            relative: ratio(d2.sqrt(), a2.sqrt()),
            max_abs,
        });
    }
    progress(total, total);
    report.components = components.iter().map(|(n, s)| s.group(n)).collect();
    // Blocks in first-seen order, merging repeats (keys of one block need not be adjacent);
    // found by name through a map, so a model with a block per tensor stays linear.
    let mut merged: Vec<(String, Sums)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (name, s) in blocks {
        match at.get(&name) {
            Some(&i) => {
                let m = &mut merged[i].1;
                m.tensors += s.tensors;
                m.changed += s.changed;
                m.diff2 += s.diff2;
                m.a2 += s.a2;
            }
            None => {
                at.insert(name.clone(), merged.len());
                merged.push((name, s));
            }
        }
    }
    report.unet_blocks = merged.iter().map(|(n, s)| s.group(n)).collect();
    Ok(report)
}
