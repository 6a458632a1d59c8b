//! The recipes behind the CLI's (and the browser's) shortcut commands.

use super::{Layout, Recipe, Step};
use crate::dtype::DType;
use crate::model::components::Component;
use crate::ops::EmaMode;

fn recipe(inputs: &[&str], mut steps: Vec<Step>, dtype: Option<DType>) -> Recipe {
    if let Some(d) = dtype {
        steps.push(Step::Cast(d));
    }
    Recipe {
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        steps,
    }
}

fn open(name: &str) -> Step {
    Step::Open(name.into())
}

/// A training checkpoint to a release: state dict only, EMA dropped or used.
pub fn strip(ema: EmaMode, dtype: Option<DType>) -> Recipe {
    recipe(
        &["model"],
        vec![open("model"), Step::Strip, Step::Ema(ema)],
        dtype,
    )
}

/// The seed's merge-back of a training checkpoint with its base.
pub fn merge(ema: EmaMode, dtype: Option<DType>) -> Recipe {
    recipe(
        &["training", "base"],
        vec![
            open("training"),
            Step::Strip,
            Step::Fill("base".into()),
            Step::Ema(ema),
        ],
        dtype,
    )
}

/// The seed's graft: base weights into a training checkpoint.
pub fn graft(force: bool, dtype: Option<DType>) -> Recipe {
    recipe(
        &["base", "training"],
        vec![
            open("training"),
            Step::Graft {
                from: "base".into(),
                force,
            },
        ],
        dtype,
    )
}

/// Layout conversion (a training checkpoint is stripped first).
pub fn convert(layout: Layout, ema: EmaMode, dtype: Option<DType>) -> Recipe {
    recipe(
        &["model"],
        vec![
            open("model"),
            Step::Strip,
            Step::Ema(ema),
            Step::Convert(layout),
        ],
        dtype,
    )
}

/// A1111's weighted sum.
pub fn weighted_sum(alpha: f64, dtype: Option<DType>) -> Recipe {
    recipe(
        &["a", "b"],
        vec![
            open("a"),
            Step::Strip,
            Step::Ema(EmaMode::Drop),
            Step::WeightedSum {
                with: "b".into(),
                alpha,
                blocks: None,
            },
        ],
        dtype,
    )
}

/// A1111's add difference.
pub fn add_difference(alpha: f64, dtype: Option<DType>) -> Recipe {
    recipe(
        &["a", "b", "c"],
        vec![
            open("a"),
            Step::Strip,
            Step::Ema(EmaMode::Drop),
            Step::AddDifference {
                b: "b".into(),
                c: "c".into(),
                alpha,
                blocks: None,
            },
        ],
        dtype,
    )
}

/// Bake adapters into a model: `bake-lora` for each `(ratio, blocks)`, inputs `model`,
/// `lora1`, `lora2`, ….
pub fn bake_lora(loras: &[(f64, Option<String>)], dtype: Option<DType>) -> Recipe {
    let names: Vec<String> = (1..=loras.len()).map(|i| format!("lora{i}")).collect();
    let mut inputs = vec!["model"];
    inputs.extend(names.iter().map(String::as_str));
    let mut steps = vec![open("model"), Step::Strip, Step::Ema(EmaMode::Drop)];
    for (name, (ratio, blocks)) in names.iter().zip(loras) {
        steps.push(Step::BakeLora {
            from: name.clone(),
            ratio: *ratio,
            blocks: blocks.clone(),
        });
    }
    recipe(&inputs, steps, dtype)
}

/// Bake a VAE into a model.
pub fn bake_vae(dtype: Option<DType>) -> Recipe {
    recipe(
        &["model", "vae"],
        vec![
            open("model"),
            Step::Strip,
            Step::Swap {
                component: Component::Vae,
                from: "vae".into(),
            },
        ],
        dtype,
    )
}
