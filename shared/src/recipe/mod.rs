//! Recipes: one typed description of a rewrite, with a text form people read and write and
//! a URL form that opens the browser app with the recipe loaded.
//!
//! Every CLI command is a shortcut that builds a recipe; `ldmkit apply` and the browser run
//! recipes through the same code ([`run`]), so one recipe over the same inputs yields the same
//! bytes wherever it runs. Recipes name their inputs (`inputs training base`) and never name
//! files, so a recipe stays valid — and its output identical — on another machine.
//! The format is documented in `docs/recipes.md`.

pub mod presets;
mod run;
mod text;
mod url;

pub use run::{output_plan, run, OutputFormat, RunNotes};
pub use text::parse_dtype;
pub use url::{from_url, to_url, DEFAULT_APP_URL};

use crate::dtype::DType;
use crate::model::components::Component;
use crate::ops::EmaMode;

/// The recipe format version this build writes and reads.
pub const VERSION: u32 = 1;

/// A checkpoint layout `convert` can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The original CompVis/Stability names (`model.diffusion_model.*`): A1111, ComfyUI.
    Ldm,
    /// diffusers' per-component names (`unet/`, `vae/`, `text_encoder/`).
    Diffusers,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Ldm => "ldm",
            Layout::Diffusers => "diffusers",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ldm" | "original" => Some(Layout::Ldm),
            "diffusers" => Some(Layout::Diffusers),
            _ => None,
        }
    }
}

/// One step; each transforms the working checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Start from an input (the first step).
    Open(String),
    /// Keep the state dict only (drop optimizer state, callbacks, loops, hyper-parameters).
    Strip,
    /// Merge-back: add every key of the input that the checkpoint lacks.
    Fill(String),
    /// Copy the input's weights into this (training) checkpoint, except `cond_stage_model.*`.
    Graft { from: String, force: bool },
    /// Drop, use or keep LitEma weights.
    Ema(EmaMode),
    /// Cast floating tensors.
    Cast(DType),
    /// `self·(1−α) + with·α`.
    WeightedSum { with: String, alpha: f64 },
    /// `self + (b − c)·α`.
    AddDifference { b: String, c: String, alpha: f64 },
    /// Replace a component with the input's.
    Swap { component: Component, from: String },
    /// Keep keys matching a glob.
    Keep(String),
    /// Drop keys matching a glob.
    Drop(String),
    /// Rename a key prefix.
    Rename { from: String, to: String },
    /// Convert between layouts.
    Convert(Layout),
}

/// A rewrite: named inputs and the steps applied to them.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    pub inputs: Vec<String>,
    pub steps: Vec<Step>,
}

impl Recipe {
    /// The readable text form (what `--print-recipe` shows and `apply` reads).
    pub fn to_text(&self) -> String {
        text::print(self)
    }

    /// Parse the text form.
    pub fn from_text(s: &str) -> crate::Result<Self> {
        text::parse(s)
    }

    /// Parse either form: a URL (anything with `#recipe=`) or text.
    pub fn parse_any(s: &str) -> crate::Result<Self> {
        if s.contains("#recipe=") {
            from_url(s)
        } else {
            Self::from_text(s)
        }
    }
}
