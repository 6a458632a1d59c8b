//! Baking adapters into a base: every module becomes a ΔW term on its weight, evaluated when
//! the plan runs (`plan::delta`), so untouched tensors stay byte copies and touched ones are
//! computed a chunk at a time.
//!
//! `W += ratio · scale · ΔW` as A1111, ComfyUI and kohya's `merge_lora.py` bake, with
//! diffusers' `fuse_lora` rounding; a block weight multiplies the ratio of every module in
//! its block. A module that finds no weight in the base, or one of another shape, refuses
//! the whole bake, naming the first such module: a LoRA for another base must not be baked
//! half-way.

use super::blocks::{self, Block, BlockWeights};
use super::keys::{Network, Part};
use super::resolve::{Target, TargetIndex};
use super::{Adapter, Module, ModuleKind};
use crate::error::{Error, Result};
use crate::ops::{Entry, Working};
use crate::plan::{Delta, KronFactor, LazyData, LazyTensor, Term};
use std::sync::Arc;

/// What a bake did.
#[derive(Debug, Default, Clone)]
pub struct BakeReport {
    /// Modules applied.
    pub modules: usize,
    /// Base tensors changed.
    pub tensors: usize,
    /// Modules left out because their block's weight is 0.
    pub skipped: usize,
}

/// Bake `adapter` into `work` at `ratio`, with optional per-block weights; `sdxl` says the
/// base's block numbering.
pub fn bake(
    work: &mut Working,
    adapter: &Adapter,
    ratio: f64,
    blocks: Option<&BlockWeights>,
    sdxl: bool,
) -> Result<BakeReport> {
    if !ratio.is_finite() {
        return Err(Error::op(format!(
            "the ratio must be a finite number, not {ratio}"
        )));
    }
    let index = TargetIndex::new(work);
    let mut report = BakeReport::default();
    // Resolve everything first: a module that does not fit leaves `work` untouched.
    let mut planned: Vec<(String, Term)> = Vec::new();
    for m in &adapter.modules {
        let target = index.get(m.network, &m.path).ok_or_else(|| {
            Error::op(format!(
                "does not fit this model: module '{}' has no weight in it (the first of {} modules; is the adapter for another base?)",
                m.name(),
                adapter.modules.len()
            ))
        })?;
        let block = match m.network {
            Network::Unet => blocks::of_unet_path(&m.path, sdxl).unwrap_or(Block::Base),
            _ => Block::Base,
        };
        let w = blocks.map_or(1.0, |b| b.weight(block));
        if w == 0.0 {
            report.skipped += 1;
            continue;
        }
        let weight = &work.get(&target.weight)?.tensor;
        check_fit(m, target, weight)?;
        let scale = ratio * m.scale * w;
        planned.push((target.weight.clone(), term(m, target, scale, weight.dtype)?));
        if let (Some(diff_b), Some(bias)) = (m.tensor(Part::DiffB), &target.bias) {
            planned.push((
                bias.clone(),
                Term {
                    delta: Delta::Full(diff_b.reshape(vec![diff_b.numel(), 1])),
                    scale: ratio * w,
                    rows: target.rows,
                    magnitude: None,
                },
            ));
        } else if m.tensor(Part::DiffB).is_some() {
            return Err(Error::op(format!(
                "module '{}' changes a bias the model's weight has none of",
                m.name()
            )));
        }
        report.modules += 1;
    }
    let mut touched = std::collections::HashSet::new();
    for (key, t) in planned {
        let entry = work
            .state_dict
            .get_mut(&key)
            .expect("resolved targets are state-dict keys");
        let (base, mut terms) = match &*entry.tensor.data {
            LazyData::Adapted { base, terms } if touched.contains(&key) => {
                (base.clone(), terms.to_vec())
            }
            _ => (entry.tensor.clone(), Vec::new()),
        };
        terms.push(t);
        *entry = Entry {
            tensor: LazyTensor {
                dtype: base.dtype,
                shape: base.shape.clone(),
                data: Arc::new(LazyData::Adapted {
                    base,
                    terms: Arc::new(terms),
                }),
            },
            origin: None,
        };
        touched.insert(key);
    }
    report.tensors = touched.len();
    Ok(report)
}

/// Refuse a module whose ΔW cannot be the weight's shape.
fn check_fit(m: &Module, target: &Target, weight: &LazyTensor) -> Result<()> {
    let rows = target
        .rows
        .map_or(weight.shape.first().copied().unwrap_or(1), |r| r.1);
    let cols: u64 = weight.shape.get(1..).map_or(1, |s| s.iter().product());
    let fits = match m.kind {
        ModuleKind::Ia3 => {
            let n = m.tensor(Part::Ia3Weight).map_or(0, |t| t.numel());
            n == rows || n == weight.shape.get(1).copied().unwrap_or(0)
        }
        _ => {
            let want = &m.weight_shape;
            !want.is_empty()
                && want[0] == rows
                && want.iter().product::<u64>() == rows * cols
                && (want.len() != 4 || weight.shape.len() != 4 || want[2..] == weight.shape[2..])
        }
    };
    if !fits {
        return Err(Error::op(format!(
            "does not fit this model: module '{}' changes a {:?} weight, but '{}' is {:?}{}",
            m.name(),
            m.weight_shape,
            target.weight,
            weight.shape,
            target
                .rows
                .map_or(String::new(), |(s, n)| format!(" (rows {s}..{})", s + n))
        )));
    }
    if m.dora && !matches!(m.kind, ModuleKind::Lora | ModuleKind::Locon) {
        return Err(Error::op(format!(
            "module '{}': weight-decomposed (DoRA) {} is not supported; DoRA is baked for LoRA and LoCon modules",
            m.name(),
            m.kind.label()
        )));
    }
    Ok(())
}

fn need(m: &Module, p: Part) -> Result<&LazyTensor> {
    m.tensor(p)
        .ok_or_else(|| Error::op(format!("module '{}' lacks a {p:?} tensor", m.name())))
}

/// A `[rows, cols]` view of a factor (convolution factors flattened as kohya flattens them).
fn as_matrix(t: &LazyTensor) -> LazyTensor {
    let rows = t.shape.first().copied().unwrap_or(1);
    t.reshape(vec![rows, t.numel() / rows.max(1)])
}

/// The module's term. Factors are read in the weight's dtype, as diffusers (and A1111) cast
/// an adapter to the model's dtype when they load it: a float32 LoRA baked into a float16
/// model is rounded to float16 first.
fn term(m: &Module, target: &Target, scale: f64, dtype: crate::DType) -> Result<Term> {
    let cast = |t: &LazyTensor| {
        if t.dtype.is_float() {
            t.cast(dtype)
        } else {
            t.clone()
        }
    };
    let tensors: std::collections::BTreeMap<Part, (String, LazyTensor)> = m
        .tensors
        .iter()
        .map(|(p, (n, t))| (*p, (n.clone(), cast(t))))
        .collect();
    let m = &Module {
        tensors,
        ..m.clone()
    };
    let delta = match m.kind {
        ModuleKind::Lora | ModuleKind::Locon => Delta::LowRank {
            up: as_matrix(need(m, Part::Up)?),
            down: match m.tensor(Part::Mid) {
                Some(_) => need(m, Part::Down)?.clone(),
                None => as_matrix(need(m, Part::Down)?),
            },
            mid: m.tensor(Part::Mid).cloned(),
        },
        ModuleKind::Loha => {
            let cores = match (m.tensor(Part::HadaT1), m.tensor(Part::HadaT2)) {
                (Some(a), Some(b)) => Some((a.clone(), b.clone())),
                _ => None,
            };
            Delta::Hadamard {
                w1a: need(m, Part::HadaW1A)?.clone(),
                w1b: need(m, Part::HadaW1B)?.clone(),
                w2a: need(m, Part::HadaW2A)?.clone(),
                w2b: need(m, Part::HadaW2B)?.clone(),
                cores,
            }
        }
        ModuleKind::Lokr => {
            let w1 = match m.tensor(Part::LokrW1) {
                Some(w) => KronFactor::Whole(w.clone()),
                None => KronFactor::Product(
                    need(m, Part::LokrW1A)?.clone(),
                    need(m, Part::LokrW1B)?.clone(),
                ),
            };
            let w2 = match (m.tensor(Part::LokrW2), m.tensor(Part::LokrT2)) {
                (Some(w), _) => KronFactor::Whole(as_matrix(w)),
                (None, Some(t)) => KronFactor::Tucker {
                    t: t.clone(),
                    a: need(m, Part::LokrW2A)?.clone(),
                    b: need(m, Part::LokrW2B)?.clone(),
                },
                (None, None) => KronFactor::Product(
                    need(m, Part::LokrW2A)?.clone(),
                    as_matrix(need(m, Part::LokrW2B)?),
                ),
            };
            Delta::Kronecker { w1, w2 }
        }
        ModuleKind::Full => Delta::Full(as_matrix(need(m, Part::Diff)?)),
        ModuleKind::Ia3 => Delta::Ia3 {
            weight: need(m, Part::Ia3Weight)?.clone(),
            on_input: m.ia3_on_input,
        },
        ModuleKind::Glora => Delta::Glora {
            a1: as_matrix(need(m, Part::GloraA1)?),
            a2: as_matrix(need(m, Part::GloraA2)?),
            b1: as_matrix(need(m, Part::GloraB1)?),
            b2: as_matrix(need(m, Part::GloraB2)?),
        },
    };
    Ok(Term {
        delta,
        scale,
        rows: target.rows,
        magnitude: m.tensor(Part::DoraScale).cloned(),
    })
}
