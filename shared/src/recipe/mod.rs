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

pub use run::{output_plan, output_plan_with, run, OutputFormat, RunNotes};
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
    /// `self·(1−α) + with·α`, α in [0, 1] (see [`check_alpha`]); with `blocks`, α per UNet
    /// block and `BASE` for the text encoders (supermerger's block-weighted merge).
    WeightedSum {
        with: String,
        alpha: f64,
        blocks: Option<String>,
    },
    /// `self + (b − c)·α`, α any finite float32 (see [`check_alpha`]); `blocks` as above.
    AddDifference {
        b: String,
        c: String,
        alpha: f64,
        blocks: Option<String>,
    },
    /// Bake an adapter (LoRA, LoCon, LyCORIS) in at `ratio`, optionally per block
    /// ([`crate::adapter::blocks::BlockWeights`]).
    BakeLora {
        from: String,
        ratio: f64,
        blocks: Option<String>,
    },
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

/// Why `alpha` cannot be the weight of `step` (`weighted-sum` or `add-difference`), if it
/// cannot; said as the rest of "`alpha` …", e.g. "must be between 0 and 1".
///
/// Every merge weight must be finite: NaN or infinity would turn every merged value into NaN
/// or infinity, a file that loads and then draws noise. Beyond that:
///
/// - `weighted-sum`: α in [0, 1], the range of A1111's merger slider (and of the browser
///   app's field). Inside it the result is a convex combination, so every value lies between
///   A's and B's and a half-precision merge cannot overflow; outside it is extrapolation,
///   which A1111's weighted sum never does, so a recipe saying 1.5 more likely means 0.15.
///   Extrapolating on purpose is `add-difference B A α` (A + (B − A)·α = A·(1−α) + B·α).
/// - `add-difference`: any α finite in float32, the precision merges are computed in.
///   Multipliers past 1 (a stronger difference) and below 0 (subtracting one) are both
///   used, and A + (B − C)·α is unbounded whatever α is, so no narrower range would protect
///   anything.
pub fn check_alpha(step: &str, alpha: f64) -> Result<(), &'static str> {
    if !alpha.is_finite() {
        return Err("must be a finite number");
    }
    match step {
        "weighted-sum" if !(0.0..=1.0).contains(&alpha) => Err("must be between 0 and 1"),
        "add-difference" if !(alpha as f32).is_finite() => {
            Err("must be a finite number (it is computed in float32)")
        }
        _ => Ok(()),
    }
}

impl Step {
    /// Refuse numbers this step cannot use ([`check_alpha`]); recipes parsed from text or a
    /// link are checked already, recipes built in code are checked when they run.
    pub fn check(&self) -> crate::Result<()> {
        if let Step::BakeLora { ratio, .. } = self {
            if !ratio.is_finite() {
                return Err(crate::error::Error::Recipe(
                    "bake-lora ratio must be a finite number".into(),
                ));
            }
        }
        let (step, alpha) = match self {
            Step::WeightedSum { alpha, .. } => ("weighted-sum", *alpha),
            Step::AddDifference { alpha, .. } => ("add-difference", *alpha),
            _ => return Ok(()),
        };
        check_alpha(step, alpha).map_err(|why| {
            crate::error::Error::Recipe(format!(
                "{step} alpha {why}, not {}",
                crate::value::python_float_repr(alpha)
            ))
        })
    }
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
