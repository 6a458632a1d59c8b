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
use crate::safety::{explain, verdict, Verdict};
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
    /// `module.name` as Python 3 imports it (Python 2 names mapped as `fix_imports` does).
    pub name: String,
    /// The name as the pickle writes it, where that differs (`__builtin__.long`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    pub verdict: Verdict,
    /// What it is known to do, when it is not allowed and we know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// For a name computed at load time: the call that builds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computed_by: Option<String>,
    /// Where it is imported when not by the file's own pickles (`x → nested pickle`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub count: u64,
}

impl GlobalEntry {
    /// Verdicts for imports (one entry per global and way of reaching it), not allowed
    /// first, then training, then allowed; first-seen order within each.
    pub fn list(imports: &[crate::pickle::Import]) -> Vec<GlobalEntry> {
        let mut globals: Vec<GlobalEntry> = crate::checkpoint::merge_imports(imports)
            .into_iter()
            .map(|i| {
                let computed = i.computed_by.is_some();
                let verdict = if computed {
                    Verdict::NotAllowed
                } else {
                    verdict(i.weights_only_name())
                };
                let why = if computed {
                    Some("which global is imported is decided by running code".to_string())
                } else if verdict == Verdict::NotAllowed {
                    explain(&i.global).map(str::to_string)
                } else {
                    None
                };
                GlobalEntry {
                    name: if computed {
                        format!("{} (name computed at load time)", i.global.qualified())
                    } else {
                        i.global.qualified()
                    },
                    written: i.written.as_ref().map(|w| w.qualified()),
                    verdict,
                    why,
                    computed_by: i.computed_by.clone(),
                    via: i.via.clone(),
                    count: i.count,
                }
            })
            .collect();
        globals.sort_by_key(|g| std::cmp::Reverse(g.verdict));
        globals
    }

    /// Where the import happens and what it is, as one string:
    /// `state_dict/x → nested pickle → posix.system`.
    pub fn located(&self) -> String {
        match &self.via {
            Some(via) => format!("{via} → {}", self.name),
            None => self.name.clone(),
        }
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
    /// Every global `torch.load(weights_only=True)` refuses (training extension included).
    pub unsafe_globals: Vec<String>,
    /// Set for a file that is valid safetensors and also a pickle torch would unpickle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polyglot: Option<String>,
    /// Set when the file is a LoRA / LyCORIS adapter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<crate::adapter::summary::AdapterReport>,
    /// Set when the file looks like an adapter but is malformed: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter_error: Option<String>,
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
            .map(GlobalEntry::located)
            .collect();
        let architecture_detail = detect_architecture(&state_keys);
        let (adapter, adapter_error) = match crate::adapter::summary::from_checkpoint(ckpt) {
            Ok(Some(a)) => {
                let metadata = match &ckpt.info {
                    ContainerInfo::Safetensors { metadata, .. } => metadata.clone(),
                    _ => BTreeMap::new(),
                };
                (
                    Some(crate::adapter::summary::summarise(&a, &metadata)),
                    None,
                )
            }
            Ok(None) => (None, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let architecture = match &adapter {
            Some(a) => format!("adapter-{}", a.base.id()),
            None => architecture_detail.label(),
        };
        Ok(Report {
            format: ckpt.format.name(),
            file_size: ckpt.source.len(),
            architecture,
            architecture_detail,
            tensors,
            components,
            dtypes,
            totals,
            globals,
            unsafe_globals,
            polyglot: ckpt.polyglot.clone(),
            adapter,
            adapter_error,
            metadata: ReportMetadata {
                container: ckpt.info.clone(),
                lightning: lightning_info(ckpt),
                storage,
            },
        })
    }

    /// The most severe verdict among the globals (allowed when there are none); a polyglot
    /// is never allowed.
    pub fn worst_verdict(&self) -> Verdict {
        let worst = self
            .globals
            .iter()
            .map(|g| g.verdict)
            .max()
            .unwrap_or(Verdict::Allowed);
        if self.polyglot.is_some() {
            Verdict::NotAllowed
        } else {
            worst
        }
    }
}
