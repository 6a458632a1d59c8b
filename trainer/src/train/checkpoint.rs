//! Training checkpoints in a run folder: `checkpoints/step-NNNNNNNN/` holding
//!
//! - `unet.safetensors`: the f32 master weights, named as in the original LDM layout
//!   (`model.diffusion_model.*`), so the file is itself a UNet checkpoint every ldmkit
//!   command (and `export`) reads;
//! - `ema.safetensors` (with `--ema`): the EMA weights, named the same way;
//! - `optimizer.safetensors`: AdamW's `m.<name>` / `v.<name>` (diffusers names);
//! - `state.json`: step, data positions, optimizer and EMA counters, the RNG state (the
//!   seed and the step counter: all randomness is counter-based, [`super::rng`]).
//!
//! A checkpoint is written into `step-NNNNNNNN.partial/` and renamed when every file is
//! complete, so a run killed at any moment leaves only whole checkpoints under real names.
//! Tensors are streamed to disk one at a time (the safetensors crate asks for each tensor's
//! bytes as it writes), so saving a 10 GB state does not need 10 GB of host memory.

use super::data::Cursor;
use super::nn::params::Params;
use candle_core::{DType, Device, Tensor, Var};
use ldmkit_core::layout::unet::{to_ldm, UnetShape};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const UNET_PREFIX: &str = "model.diffusion_model.";
pub const DIR: &str = "checkpoints";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Optimizer steps done.
    pub step: u64,
    pub data: Cursor,
    pub prior: Option<Cursor>,
    pub adam_step: u64,
    pub ema_updates: Option<u64>,
    pub rng: RngState,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: u64,
    /// Draws are keyed by the step: the next step's generators follow from this.
    pub counter: u64,
}

pub fn name_of(step: u64) -> String {
    format!("step-{step:08}")
}

/// Complete checkpoints of `run`, oldest first.
pub fn list(run: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(run.join(DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path()
                .join("state.json")
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// LDM names for the UNet's diffusers parameter names.
pub fn ldm_names(params: &Params) -> Result<Vec<String>, String> {
    let shape = UnetShape::from_diffusers(params.names.iter().map(String::as_str));
    params
        .names
        .iter()
        .map(|n| {
            to_ldm(n, &shape)
                .map(|l| format!("{UNET_PREFIX}{l}"))
                .ok_or_else(|| format!("no LDM name for UNet tensor '{n}'"))
        })
        .collect()
}

fn write_tensors(path: &Path, tensors: Vec<(String, &Tensor)>) -> Result<(), String> {
    safetensors::serialize_to_file(tensors, None, path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub struct Saved<'a> {
    pub params: &'a Params,
    pub ema: Option<&'a [Tensor]>,
    pub m: &'a [Tensor],
    pub v: &'a [Tensor],
    pub state: &'a State,
}

/// Write a checkpoint; returns its folder.
pub fn save(run: &Path, s: &Saved) -> Result<PathBuf, String> {
    let dir = run.join(DIR);
    let fin = dir.join(name_of(s.state.step));
    let partial = dir.join(format!("{}.partial", name_of(s.state.step)));
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| io(&partial, e))?;
    let ldm = ldm_names(s.params)?;
    let masters: Vec<&Tensor> = s.params.vars.iter().map(Var::as_tensor).collect();
    write_tensors(
        &partial.join("unet.safetensors"),
        ldm.iter().cloned().zip(masters).collect(),
    )?;
    if let Some(ema) = s.ema {
        write_tensors(
            &partial.join("ema.safetensors"),
            ldm.iter().cloned().zip(ema).collect(),
        )?;
    }
    let mut moments = Vec::new();
    for (i, name) in s.params.names.iter().enumerate() {
        moments.push((format!("m.{name}"), &s.m[i]));
        moments.push((format!("v.{name}"), &s.v[i]));
    }
    write_tensors(&partial.join("optimizer.safetensors"), moments)?;
    let state = serde_json::to_string_pretty(s.state).expect("serialisable");
    std::fs::write(partial.join("state.json"), state).map_err(|e| io(&partial, e))?;
    if fin.exists() {
        std::fs::remove_dir_all(&fin).map_err(|e| io(&fin, e))?;
    }
    std::fs::rename(&partial, &fin).map_err(|e| io(&fin, e))?;
    Ok(fin)
}

/// Remove all but the newest `keep` checkpoints (0 keeps all).
pub fn prune(run: &Path, keep: usize) -> Result<(), String> {
    let all = list(run);
    if keep == 0 || all.len() <= keep {
        return Ok(());
    }
    for (_, p) in &all[..all.len() - keep] {
        std::fs::remove_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

pub fn read_state(dir: &Path) -> Result<State, String> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Tensors of a checkpoint file in `names` order, as f32 on `device`.
pub fn read_tensors(path: &Path, names: &[String], device: &Device) -> Result<Vec<Tensor>, String> {
    let fail =
        |e: candle_core::Error| format!("{}: {}", path.display(), crate::models::one_line(e));
    // One tensor at a time from a mapping, so a 10 GB optimizer state is never all in memory.
    // SAFETY: checkpoint files are not modified while a run reads them.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(fail)?;
    names
        .iter()
        .map(|n| {
            if st.get(n).is_err() {
                return Err(format!("{}: '{n}' is missing", path.display()));
            }
            st.load(n, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.to_device(device))
                .map_err(fail)
        })
        .collect()
}
