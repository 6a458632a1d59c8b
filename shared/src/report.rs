//! The inspection report: everything `ldmkit inspect` and the browser summary show.
//!
//! Built once from a [`Checkpoint`] and serialised as the documented `--json` object, so the
//! CLI, the web app and tests all read the same facts.

use crate::checkpoint::{Checkpoint, ContainerInfo};
use crate::error::Result;
use crate::model::{
    classify, detect_architecture, lightning_info, state_dict_key, Architecture, Component,
    LightningInfo,
};
use crate::safety::{verdict, Verdict};
use crate::tensor::TensorRef;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One tensor as listed in a report.
#[derive(Debug, Clone, Serialize)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub bytes: u64,
    pub component: Component,
}

/// Totals for a group of tensors.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub tensors: u64,
    pub params: u64,
    pub bytes: u64,
}

impl Totals {
    fn add(&mut self, t: &TensorRef) {
        // Saturating: stride-0 views may claim huge sizes over a tiny storage.
        self.tensors += 1;
        self.params = self.params.saturating_add(t.numel());
        self.bytes = self.bytes.saturating_add(t.nbytes());
    }
}

/// A global with its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct GlobalEntry {
    pub name: String,
    pub verdict: Verdict,
    pub count: u64,
}

impl GlobalEntry {
    /// Verdicts for imports (one entry per global), dangerous first, then unknown, then
    /// allowed; first-seen order within each.
    pub fn list(imports: &[crate::pickle::Import]) -> Vec<GlobalEntry> {
        let mut globals: Vec<GlobalEntry> = crate::checkpoint::merge_imports(imports)
            .into_iter()
            .map(|i| GlobalEntry {
                name: i.global.qualified(),
                verdict: verdict(&i.global),
                count: i.count,
            })
            .collect();
        globals.sort_by_key(|g| std::cmp::Reverse(g.verdict));
        globals
    }
}

/// Storage sharing facts (tied weights and views cost nothing extra on disk).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageFacts {
    pub storages: u64,
    /// Bytes of all storages: what the tensor data costs on disk.
    pub storage_bytes: u64,
    /// Tensors that share their storage with another tensor.
    pub shared_tensors: u64,
    /// Tensors that are not row-major contiguous views.
    pub non_contiguous: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReportMetadata {
    pub container: ContainerInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lightning: Option<LightningInfo>,
    pub storage: StorageFacts,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub file_size: u64,
    pub architecture: String,
    pub architecture_detail: Architecture,
    pub tensors: Vec<TensorEntry>,
    pub components: BTreeMap<Component, Totals>,
    pub dtypes: BTreeMap<String, Totals>,
    pub totals: Totals,
    pub globals: Vec<GlobalEntry>,
    pub unsafe_globals: Vec<String>,
    pub metadata: ReportMetadata,
}

impl Report {
    /// Build the report of a checkpoint.
    pub fn new(ckpt: &Checkpoint) -> Result<Report> {
        let named = ckpt.tensors()?;
        let mut components: BTreeMap<Component, Totals> = BTreeMap::new();
        let mut dtypes: BTreeMap<String, Totals> = BTreeMap::new();
        let mut totals = Totals::default();
        let mut state_keys: HashMap<&str, &TensorRef> = HashMap::new();
        let mut tensors = Vec::with_capacity(named.len());
        let mut by_storage: HashMap<u32, u64> = HashMap::new();
        let mut seen_tensor_ids = HashSet::new();
        let mut storage = StorageFacts::default();
        for nt in &named {
            let component = classify(&nt.name);
            components.entry(component).or_default().add(nt.tensor);
            dtypes
                .entry(nt.tensor.dtype.to_string())
                .or_default()
                .add(nt.tensor);
            totals.add(nt.tensor);
            if let Some(key) = state_dict_key(&nt.name) {
                state_keys.entry(key).or_insert(nt.tensor);
            }
            if seen_tensor_ids.insert(nt.id) {
                *by_storage.entry(nt.tensor.storage).or_default() += 1;
                if !nt.tensor.is_contiguous() {
                    storage.non_contiguous += 1;
                }
            }
            tensors.push(TensorEntry {
                name: nt.name.clone(),
                dtype: nt.tensor.dtype.to_string(),
                shape: nt.tensor.shape.clone(),
                bytes: nt.tensor.nbytes(),
                component,
            });
        }
        storage.storages = by_storage.len() as u64;
        storage.shared_tensors = by_storage.values().filter(|&&n| n > 1).sum();
        storage.storage_bytes = by_storage
            .keys()
            .filter_map(|&id| match ckpt.graph.get(id) {
                crate::value::Value::Storage(s) => s.nbytes(),
                _ => None,
            })
            .fold(0u64, u64::saturating_add);

        let globals = GlobalEntry::list(&ckpt.imports);
        let unsafe_globals = globals
            .iter()
            .filter(|g| g.verdict != Verdict::Allowed)
            .map(|g| g.name.clone())
            .collect();
        let architecture_detail = detect_architecture(&state_keys);
        Ok(Report {
            format: ckpt.format.name(),
            file_size: ckpt.source.len(),
            architecture: architecture_detail.label(),
            architecture_detail,
            tensors,
            components,
            dtypes,
            totals,
            globals,
            unsafe_globals,
            metadata: ReportMetadata {
                container: ckpt.info.clone(),
                lightning: lightning_info(ckpt),
                storage,
            },
        })
    }

    /// The most severe verdict among the globals (allowed when there are none).
    pub fn worst_verdict(&self) -> Verdict {
        self.globals
            .iter()
            .map(|g| g.verdict)
            .max()
            .unwrap_or(Verdict::Allowed)
    }
}
