//! Running a recipe: steps over working checkpoints, then the output's plan.

use super::{Recipe, Step};
use crate::error::{Error, Result};
use crate::ops::{self, EmaMode, Input, Inputs, OutputNotes, OutputPolicy, Working};
use crate::plan::Output;
use std::collections::BTreeMap;

/// What the steps did, one line each, for the user.
#[derive(Debug, Default, Clone)]
pub struct RunNotes {
    pub lines: Vec<String>,
}

fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// Apply `recipe` to `bound` (one input per recipe input, in order).
pub fn run(recipe: &Recipe, inputs: &Inputs, bound: &[Input]) -> Result<(Working, RunNotes)> {
    for step in &recipe.steps {
        step.check()?;
    }
    if bound.len() != recipe.inputs.len() {
        return Err(Error::recipe(format!(
            "needs {} input(s) ({}), got {}",
            recipe.inputs.len(),
            recipe.inputs.join(", "),
            bound.len()
        )));
    }
    let working = |name: &str| -> Result<Working> {
        let i = recipe
            .inputs
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| Error::recipe(format!("no input '{name}'")))?;
        inputs.working(&bound[i])
    };
    let mut notes = RunNotes::default();
    let mut work = Working::default();
    for step in &recipe.steps {
        let line = match step {
            Step::Open(name) => {
                work = working(name)?;
                format!("opened {name}: {}", count(work.state_dict.len(), "tensor"))
            }
            Step::Strip => {
                let had = work.tree.is_some();
                work.strip();
                if had {
                    "kept the state dict only".into()
                } else {
                    "already a bare state dict".into()
                }
            }
            Step::Fill(name) => {
                let n = ops::fill_from(&mut work, &working(name)?)?;
                format!("added {} from {name}", count(n, "missing key"))
            }
            Step::Graft { from, force } => {
                let r = ops::graft(&mut work, &working(from)?, *force)?;
                let mut line = format!("grafted {} from {from}", count(r.copied, "tensor"));
                if !r.kept.is_empty() {
                    line += &format!("; {} not in {from} kept", count(r.kept.len(), "key"));
                }
                if !r.mismatched.is_empty() {
                    line += &format!("; {} copied despite mismatch", r.mismatched.len());
                }
                line
            }
            Step::Ema(mode) => {
                let before = work.state_dict.len();
                let swapped = ops::apply_ema(&mut work, *mode)?;
                let dropped = before - work.state_dict.len();
                match mode {
                    EmaMode::Use => format!(
                        "used EMA for {}, dropped {}",
                        count(swapped, "weight"),
                        count(dropped, "EMA tensor")
                    ),
                    EmaMode::Drop => format!("dropped {}", count(dropped, "EMA tensor")),
                    EmaMode::Keep => "kept EMA tensors".into(),
                }
            }
            Step::Cast(dtype) => {
                let n = ops::cast(&mut work, *dtype)?;
                format!("cast {} to {}", count(n, "tensor"), dtype.torch_name())
            }
            Step::WeightedSum {
                with,
                alpha,
                blocks,
            } => {
                let w = block_weights(blocks, &work)?;
                ops::weighted_sum(&mut work, &working(with)?, *alpha, w.as_ref())?;
                format!(
                    "weighted sum with {with}, alpha {alpha}{}",
                    blocks_note(blocks)
                )
            }
            Step::AddDifference {
                b,
                c,
                alpha,
                blocks,
            } => {
                let w = block_weights(blocks, &work)?;
                ops::add_difference(&mut work, &working(b)?, &working(c)?, *alpha, w.as_ref())?;
                format!("added ({b} - {c}) x {alpha}{}", blocks_note(blocks))
            }
            Step::BakeLora {
                from,
                ratio,
                blocks,
            } => {
                let w = block_weights(blocks, &work)?;
                let i = recipe
                    .inputs
                    .iter()
                    .position(|n| n == from)
                    .ok_or_else(|| Error::recipe(format!("no input '{from}'")))?;
                let adapter = inputs.adapter(&bound[i]).map_err(|e| match e {
                    Error::Op(m) => Error::op(format!("{from}: {m}")),
                    other => other,
                })?;
                let sdxl = crate::adapter::blocks::sdxl_numbering(&work);
                let r = crate::adapter::bake::bake(&mut work, &adapter, *ratio, w.as_ref(), sdxl)?;
                let mut line = format!(
                    "baked {from} ({}, {}) at {ratio}{}: {} changed",
                    adapter.kind(),
                    count(r.modules, "module"),
                    blocks_note(blocks),
                    count(r.tensors, "tensor")
                );
                if r.skipped > 0 {
                    line += &format!(
                        "; {} at block weight 0 left out",
                        count(r.skipped, "module")
                    );
                }
                line
            }
            Step::Swap { component, from } => {
                let n = ops::swap_component(&mut work, &working(from)?, *component)?;
                format!(
                    "took the {} from {from} ({})",
                    component.name(),
                    count(n, "tensor")
                )
            }
            Step::Keep(p) => format!(
                "dropped {} not matching {p}",
                count(ops::keep_matching(&mut work, p)?, "key")
            ),
            Step::Drop(p) => format!(
                "dropped {} matching {p}",
                count(ops::drop_matching(&mut work, p)?, "key")
            ),
            Step::Rename { from, to } => {
                format!(
                    "renamed {}",
                    count(ops::rename_prefix(&mut work, from, to)?, "key")
                )
            }
            Step::Convert(layout) => {
                let r = crate::layout::convert(&mut work, *layout)?;
                let mut line = format!(
                    "converted {} to the {} layout",
                    count(r.converted, "tensor"),
                    layout.name()
                );
                if !r.dropped.is_empty() {
                    line += &format!(
                        "; dropped {} it has no place for",
                        count(r.dropped.len(), "key")
                    );
                }
                line
            }
        };
        notes.lines.push(line);
    }
    Ok((work, notes))
}

/// A step's block weights for the working model's numbering.
fn block_weights(
    spec: &Option<String>,
    work: &Working,
) -> Result<Option<crate::adapter::blocks::BlockWeights>> {
    spec.as_deref()
        .map(|s| {
            crate::adapter::blocks::BlockWeights::parse(
                s,
                crate::adapter::blocks::sdxl_numbering(work),
            )
            .map_err(Error::recipe)
        })
        .transpose()
}

fn blocks_note(spec: &Option<String>) -> String {
    spec.as_ref()
        .map_or(String::new(), |s| format!(" (blocks {s})"))
}

/// What an output file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// `.ckpt` / `.pt` / `.pth` / `.bin`: a torch zip.
    Torch,
    Safetensors,
    /// A folder in the diffusers layout.
    DiffusersFolder,
}

/// Plan the output of a run under the default policy (entries outside torch's allowlist
/// dropped); [`output_plan_with`] also says what was dropped.
pub fn output_plan(
    work: &Working,
    inputs: &Inputs,
    format: OutputFormat,
    recipe: &Recipe,
) -> Result<Output> {
    output_plan_with(work, inputs, format, recipe, OutputPolicy::default()).map(|(o, _)| o)
}

/// Plan the output of a run. Safetensors files record the recipe in `__metadata__`; torch
/// files keep what `policy` allows, and the notes say what they left out.
pub fn output_plan_with(
    work: &Working,
    inputs: &Inputs,
    format: OutputFormat,
    recipe: &Recipe,
    policy: OutputPolicy,
) -> Result<(Output, OutputNotes)> {
    let diffusers = crate::layout::is_diffusers(work);
    let none = OutputNotes::default;
    match format {
        OutputFormat::Torch | OutputFormat::Safetensors if diffusers => Err(Error::op(
            "the result is in the diffusers layout: write it to a folder, or add 'convert ldm'",
        )),
        OutputFormat::Torch => {
            let (plan, notes) = ops::torch_plan(work, inputs, policy)?;
            Ok((Output::File(plan), notes))
        }
        OutputFormat::Safetensors => {
            let mut metadata = BTreeMap::new();
            metadata.insert("format".to_string(), "pt".to_string());
            metadata.insert("ldmkit_recipe".to_string(), recipe.to_text());
            Ok((
                Output::File(ops::safetensors_plan(work, &metadata)?),
                none(),
            ))
        }
        OutputFormat::DiffusersFolder => {
            if !diffusers {
                return Err(Error::op(
                    "a folder output is the diffusers layout: add 'convert diffusers' (or --layout diffusers)",
                ));
            }
            Ok((
                Output::Folder(crate::write::diffusers::diffusers_folder(work)?),
                none(),
            ))
        }
    }
}
