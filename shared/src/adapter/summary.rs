//! What `inspect` and the browser summary say about an adapter: kind, base, rank and alpha
//! per module and their spread, modules per block, the metadata read, and what it claims
//! against what it holds. Serialised as the report's `adapter` object.

use super::blocks::{self, Block};
use super::keys::Network;
use super::metadata::{claims_vs_tensors, TrainingInfo};
use super::{Adapter, Base, ModuleKind, Spelling};
use crate::checkpoint::{Checkpoint, ContainerInfo};
use crate::error::Result;
use crate::plan::LazyTensor;
use serde::Serialize;
use std::collections::BTreeMap;

/// One module as listed.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleEntry {
    /// kohya's name (`lora_unet_…`).
    pub name: String,
    pub network: Network,
    /// `BASE`, `IN04`, `M00`, `OUT11` (absent where the path names no block).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
    pub kind: ModuleKind,
    pub dora: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u64>,
    /// The alpha in effect (the stored one, or the rank where none is stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    pub alpha_stored: bool,
    /// What ΔW is multiplied by at ratio 1 (alpha / rank).
    pub strength: f64,
    pub weight_shape: Vec<u64>,
    pub params: u64,
}

/// Smallest and largest of a per-module number.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Spread {
    pub min: f64,
    pub max: f64,
}

/// Modules and parameters of one block (or text encoder).
#[derive(Debug, Clone, Serialize)]
pub struct BlockCount {
    /// `TE`, `TE1`, `TE2` for text encoders, block ids for the UNet, `other` for the rest.
    pub block: String,
    pub modules: u64,
    pub params: u64,
}

/// A claim of the metadata the tensors contradict.
#[derive(Debug, Clone, Serialize)]
pub struct Claim {
    pub what: String,
    pub claimed: String,
    pub held: String,
}

/// The adapter part of a report.
#[derive(Debug, Clone, Serialize)]
pub struct AdapterReport {
    pub kind: String,
    pub spelling: Spelling,
    pub base: Base,
    pub base_evidence: String,
    pub modules: Vec<ModuleEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank_spread: Option<Spread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha_spread: Option<Spread>,
    pub strength_spread: Spread,
    pub blocks: Vec<BlockCount>,
    pub unsupported: Vec<(String, String)>,
    pub other_tensors: Vec<String>,
    pub training: TrainingInfo,
    pub claims: Vec<Claim>,
}

impl AdapterReport {
    pub fn base_label(&self) -> &'static str {
        self.base.label()
    }
}

/// The adapter in an opened file: `Ok(None)` when it is not one.
pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Option<Adapter>> {
    let Some(sd) = crate::ops::find_state_dict(&ckpt.graph, ckpt.root) else {
        return Ok(None);
    };
    let mut tensors = Vec::new();
    for &(k, v) in ckpt.graph.dict_items(sd).unwrap_or(&[]) {
        if let (crate::value::Value::Tensor(t), Some(name)) =
            (ckpt.graph.get(v), ckpt.graph.as_str(k))
        {
            tensors.push((name.to_string(), LazyTensor::stored(0, t, ckpt.storage(t))));
        }
    }
    let metadata = match &ckpt.info {
        ContainerInfo::Safetensors { metadata, .. } => metadata.clone(),
        _ => BTreeMap::new(),
    };
    super::recognise_in(&tensors, &metadata, std::slice::from_ref(&ckpt.source))
}

fn spread(values: impl Iterator<Item = f64>) -> Option<Spread> {
    values.fold(None, |s: Option<Spread>, v| {
        Some(match s {
            None => Spread { min: v, max: v },
            Some(s) => Spread {
                min: s.min.min(v),
                max: s.max.max(v),
            },
        })
    })
}

/// Summarise `adapter` with its file's `metadata`.
pub fn summarise(adapter: &Adapter, metadata: &BTreeMap<String, String>) -> AdapterReport {
    let sdxl = adapter.base.is_sdxl();
    let block_of = |network: Network, path: &str| -> Option<Block> {
        match network {
            Network::Unet => blocks::of_unet_path(path, sdxl),
            _ => Some(Block::Base),
        }
    };
    let modules: Vec<ModuleEntry> = adapter
        .modules
        .iter()
        .map(|m| ModuleEntry {
            name: m.name(),
            network: m.network,
            block: block_of(m.network, &m.path).map(Block::id),
            kind: m.kind,
            dora: m.dora,
            rank: m.rank,
            alpha: m.alpha.or(m.rank.map(|r| r as f64)),
            alpha_stored: m.alpha.is_some(),
            strength: m.scale,
            weight_shape: m.weight_shape.clone(),
            params: m.params(),
        })
        .collect();
    // Blocks in the tools' order, text encoders first.
    let mut counts: BTreeMap<(u8, Option<Block>, String), (u64, u64)> = BTreeMap::new();
    for (m, e) in adapter.modules.iter().zip(&modules) {
        let key = match m.network {
            Network::TextEncoder => (0, None, "TE".to_string()),
            Network::TextEncoder1 => (0, None, "TE1".to_string()),
            Network::TextEncoder2 => (1, None, "TE2".to_string()),
            Network::Unet => match blocks::of_unet_path(&m.path, sdxl) {
                Some(b) => (2, Some(b), b.id()),
                None => (3, None, "other".to_string()),
            },
        };
        let c = counts.entry(key).or_default();
        c.0 += 1;
        c.1 += e.params;
    }
    let training = TrainingInfo::read(metadata);
    let (rank, alpha) = adapter.typical();
    let claims = claims_vs_tensors(&training, rank, alpha)
        .into_iter()
        .map(|(what, claimed, held)| Claim {
            what,
            claimed,
            held,
        })
        .collect();
    AdapterReport {
        kind: adapter.kind(),
        spelling: adapter.spelling,
        base: adapter.base,
        base_evidence: adapter.base_evidence.clone(),
        rank,
        alpha,
        rank_spread: spread(modules.iter().filter_map(|m| m.rank.map(|r| r as f64))),
        alpha_spread: spread(modules.iter().filter_map(|m| m.alpha)),
        strength_spread: spread(modules.iter().map(|m| m.strength))
            .unwrap_or(Spread { min: 0.0, max: 0.0 }),
        blocks: counts
            .into_iter()
            .map(|((_, _, block), (modules, params))| BlockCount {
                block,
                modules,
                params,
            })
            .collect(),
        modules,
        unsupported: adapter
            .unsupported
            .iter()
            .map(|(m, k)| (m.clone(), k.to_string()))
            .collect(),
        other_tensors: adapter.other_tensors.clone(),
        training,
        claims,
    }
}
