//! PyTorch Lightning checkpoint metadata.
//!
//! Lightning's `dump_checkpoint` writes `epoch`, `global_step`, `pytorch-lightning_version`
//! and `state_dict`, plus training extras (`optimizer_states`, `lr_schedulers`, `callbacks`,
//! `loops`, `hyper_parameters`, ...) unless saved weights-only. Which extras are present is
//! what decides whether a file can resume training and how much a strip will save.

use crate::checkpoint::Checkpoint;
use serde::Serialize;

/// Extras a Lightning checkpoint may carry beside the weights.
pub const LIGHTNING_EXTRAS: &[&str] = &[
    "optimizer_states",
    "lr_schedulers",
    "callbacks",
    "loops",
    "hyper_parameters",
    "hparams_name",
    "hparams_type",
    "datamodule_hyper_parameters",
    "native_amp_scaling_state",
    "MixedPrecision",
];

#[derive(Debug, Clone, Serialize)]
pub struct LightningInfo {
    pub epoch: Option<i64>,
    pub global_step: Option<i64>,
    pub version: Option<String>,
    /// Which of [`LIGHTNING_EXTRAS`] are present.
    pub extras: Vec<String>,
    /// Number of optimizers with saved state.
    pub optimizers: Option<usize>,
    /// Callback state keys (class names or Lightning state keys).
    pub callbacks: Vec<String>,
    /// Other top-level keys beside the weights.
    pub other_keys: Vec<String>,
}

/// Lightning metadata, if the top level looks like a Lightning checkpoint.
pub fn lightning_info(ckpt: &Checkpoint) -> Option<LightningInfo> {
    let top = ckpt.top_level();
    let get = |name: &str| top.iter().find(|(k, _)| k == name).map(|&(_, v)| v);
    let g = &ckpt.graph;
    let epoch = get("epoch").and_then(|v| g.as_int(v));
    let global_step = get("global_step").and_then(|v| g.as_int(v));
    let version = get("pytorch-lightning_version")
        .and_then(|v| g.as_str(v))
        .map(str::to_string);
    if epoch.is_none() && global_step.is_none() && version.is_none() {
        return None;
    }
    let extras = LIGHTNING_EXTRAS
        .iter()
        .filter(|e| get(e).is_some())
        .map(|e| e.to_string())
        .collect();
    let optimizers = get("optimizer_states")
        .and_then(|v| g.as_seq(v))
        .map(<[_]>::len);
    let callbacks = get("callbacks")
        .and_then(|v| g.dict_items(v))
        .map(|items| items.iter().map(|&(k, _)| g.key_segment(k)).collect())
        .unwrap_or_default();
    let known = [
        "epoch",
        "global_step",
        "pytorch-lightning_version",
        "state_dict",
    ];
    let other_keys = top
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !known.contains(&k.as_str()) && !LIGHTNING_EXTRAS.contains(&k.as_str()))
        .collect();
    Some(LightningInfo {
        epoch,
        global_step,
        version,
        extras,
        optimizers,
        callbacks,
        other_keys,
    })
}
