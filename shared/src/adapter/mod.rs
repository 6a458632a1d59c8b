//! Adapters: LoRA, LoCon, DoRA and LyCORIS files (LoHa, LoKr, full difference, (IA)³, GLoRA),
//! recognised by content, described, and resolved onto a base model for baking.
//!
//! Most files people of this field download are adapters, not checkpoints. The same reader
//! serves the CLI's and the browser's summaries, `bake-lora` and recipe steps:
//! [`keys`] reads every common spelling (kohya, diffusers / PEFT, LyCORIS) into one module
//! name, [`recognise`] groups a file's tensors into [`Module`]s and checks that their shapes
//! agree with their kind and rank, [`blocks`] places modules in the UNet's blocks (for the
//! picture and for block weights), [`metadata`] reads kohya's `ss_*` and `modelspec.*`
//! training metadata, [`resolve`] finds each module's weight in a base checkpoint (LDM or
//! diffusers layout) and [`bake`] turns modules into the plan's ΔW terms. The ΔW arithmetic
//! itself lives with the plan's evaluator (`plan::delta`).

pub mod bake;
pub mod blocks;
pub mod keys;
pub mod metadata;
mod recognise;
pub mod resolve;
pub mod summary;

pub use blocks::Block;
pub use keys::{Network, Part};
pub use recognise::{recognise, recognise_in, recognise_working};

use crate::plan::LazyTensor;
use serde::Serialize;
use std::collections::BTreeMap;

/// What one module does to its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleKind {
    /// `up · down` (linear or 1×1 conv).
    Lora,
    /// `up · down` over a k×k convolution (kohya's LoCon); with `lora_mid`, a Tucker core.
    Locon,
    /// LyCORIS LoHa: `(w1a·w1b) ⊙ (w2a·w2b)`.
    Loha,
    /// LyCORIS LoKr: `kron(w1, w2)`.
    Lokr,
    /// LyCORIS full difference.
    Full,
    /// (IA)³: the weight scaled per output (or input) channel.
    Ia3,
    /// GLoRA: `W·a1·a2 + b1·b2`.
    Glora,
}

impl ModuleKind {
    pub fn label(self) -> &'static str {
        match self {
            ModuleKind::Lora => "LoRA",
            ModuleKind::Locon => "LoCon",
            ModuleKind::Loha => "LoHa",
            ModuleKind::Lokr => "LoKr",
            ModuleKind::Full => "full",
            ModuleKind::Ia3 => "(IA)³",
            ModuleKind::Glora => "GLoRA",
        }
    }
}

/// Which tool's naming a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Spelling {
    /// `lora_unet_…` / `lora_te…_` (kohya, LyCORIS, A1111, ComfyUI).
    Kohya,
    /// `unet.….lora_A.weight` (diffusers, PEFT), older `lora.down` spellings included.
    Diffusers,
}

/// Which base model an adapter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Base {
    Sd1,
    Sd2,
    Sdxl,
    /// SD 1.x or 2.x: the names fit both and no shape tells them apart.
    Sd1OrSd2,
    Unknown,
}

impl Base {
    pub fn label(self) -> &'static str {
        match self {
            Base::Sd1 => "Stable Diffusion 1.x",
            Base::Sd2 => "Stable Diffusion 2.x",
            Base::Sdxl => "Stable Diffusion XL",
            Base::Sd1OrSd2 => "Stable Diffusion 1.x or 2.x",
            Base::Unknown => "unknown",
        }
    }

    /// The name `--json` uses (`sd1`, `sdxl`, `sd1-or-sd2`, …).
    pub fn id(self) -> &'static str {
        match self {
            Base::Sd1 => "sd1",
            Base::Sd2 => "sd2",
            Base::Sdxl => "sdxl",
            Base::Sd1OrSd2 => "sd1-or-sd2",
            Base::Unknown => "unknown",
        }
    }

    /// Whether a model of this base has SDXL's block numbering.
    pub fn is_sdxl(self) -> bool {
        self == Base::Sdxl
    }
}

/// One adapted module.
#[derive(Debug, Clone)]
pub struct Module {
    pub network: Network,
    /// The module's path in kohya's flat form, without the network prefix.
    pub path: String,
    pub kind: ModuleKind,
    /// Weight-decomposed (DoRA, or LyCORIS' `dora_scale` on any kind).
    pub dora: bool,
    /// The rank (the inner dimension), where the kind has one.
    pub rank: Option<u64>,
    /// The stored alpha; `None` when absent (alpha = rank).
    pub alpha: Option<f64>,
    /// The factor ΔW is multiplied by at ratio 1 (alpha / rank for LoRA kinds).
    pub scale: f64,
    /// (IA)³: whether the scale is per input channel (`on_input` = 1).
    pub ia3_on_input: bool,
    /// The shape of the weight this module changes, as far as the tensors tell.
    pub weight_shape: Vec<u64>,
    /// The module's tensors by part.
    pub tensors: BTreeMap<Part, (String, LazyTensor)>,
}

impl Module {
    /// The module's full kohya name (`lora_unet_…`).
    pub fn name(&self) -> String {
        format!("{}{}", self.network.prefix(), self.path)
    }

    pub fn tensor(&self, part: Part) -> Option<&LazyTensor> {
        self.tensors.get(&part).map(|(_, t)| t)
    }

    /// Parameters held (what the module costs in the file).
    pub fn params(&self) -> u64 {
        self.tensors.values().map(|(_, t)| t.numel()).sum()
    }
}

/// A recognised adapter file.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub spelling: Spelling,
    pub modules: Vec<Module>,
    pub base: Base,
    /// What decided the base (a tensor and its width, or the metadata).
    pub base_evidence: String,
    /// Modules of kinds ldmkit names but does not apply: `(module, kind)`.
    pub unsupported: Vec<(String, &'static str)>,
    /// Tensors that belong to no module.
    pub other_tensors: Vec<String>,
}

impl Adapter {
    /// The file's kind in the words people use: `LoRA`, `LoCon`, `LoHa`, `LoKr`, `DoRA`,
    /// `LoCon + DoRA`, `LoHa + LoKr` ...
    pub fn kind(&self) -> String {
        let mut kinds: Vec<&str> = Vec::new();
        let has = |k: ModuleKind| self.modules.iter().any(|m| m.kind == k);
        if has(ModuleKind::Locon) {
            kinds.push("LoCon");
        } else if has(ModuleKind::Lora) {
            kinds.push("LoRA");
        }
        for k in [
            ModuleKind::Loha,
            ModuleKind::Lokr,
            ModuleKind::Full,
            ModuleKind::Ia3,
            ModuleKind::Glora,
        ] {
            if has(k) {
                kinds.push(k.label());
            }
        }
        if self.modules.iter().any(|m| m.dora) {
            if kinds == ["LoRA"] {
                return "DoRA".into();
            }
            kinds.push("DoRA");
        }
        if kinds.is_empty() {
            return "adapter".into();
        }
        kinds.join(" + ")
    }

    /// The most common rank and alpha (what a file "is": rank 32, alpha 16).
    pub fn typical(&self) -> (Option<u64>, Option<f64>) {
        fn mode<T: PartialEq + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
            let mut counts: Vec<(T, usize)> = Vec::new();
            for v in values {
                match counts.iter_mut().find(|(x, _)| *x == v) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((v, 1)),
                }
            }
            // The first of the most frequent: file order breaks ties.
            let best = counts.iter().map(|(_, n)| *n).max()?;
            counts.into_iter().find(|(_, n)| *n == best).map(|(v, _)| v)
        }
        let rank = mode(self.modules.iter().filter_map(|m| m.rank));
        let alpha = mode(
            self.modules
                .iter()
                .filter_map(|m| m.alpha.or(m.rank.map(|r| r as f64))),
        );
        (rank, alpha)
    }
}
