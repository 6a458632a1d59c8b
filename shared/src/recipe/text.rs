//! The recipe text form: a version line, an `inputs` line, then one step per line.
//!
//! ```text
//! ldmkit-recipe 1
//! inputs training base
//! open training
//! strip
//! fill base
//! ema drop
//! cast f16
//! ```
//!
//! Words are separated by spaces; `#` starts a comment. The printed form is canonical:
//! parsing it and printing again gives the same text.

use super::{Layout, Recipe, Step, VERSION};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::components::Component;
use crate::ops::EmaMode;
use crate::value::python_float_repr;

pub(super) fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::Float16 => "f16",
        DType::BFloat16 => "bf16",
        DType::Float32 => "f32",
        other => other.torch_name(),
    }
}

/// A dtype as recipes and the CLI spell it (`f16`, `bf16`, `f32`, and common aliases).
pub fn parse_dtype(s: &str) -> Option<DType> {
    match s {
        "f16" | "fp16" | "half" | "float16" => Some(DType::Float16),
        "bf16" | "bfloat16" => Some(DType::BFloat16),
        "f32" | "fp32" | "float" | "float32" => Some(DType::Float32),
        _ => None,
    }
}

fn parse_component(s: &str) -> Option<Component> {
    match s {
        "unet" => Some(Component::Unet),
        "vae" => Some(Component::Vae),
        "text_encoder" | "text-encoder" | "clip" => Some(Component::TextEncoder),
        _ => None,
    }
}

/// The words of one step.
pub(super) fn step_words(step: &Step) -> Vec<String> {
    let w = |s: &str| s.to_string();
    match step {
        Step::Open(i) => vec![w("open"), i.clone()],
        Step::Strip => vec![w("strip")],
        Step::Fill(i) => vec![w("fill"), i.clone()],
        Step::Graft { from, force } => {
            let mut v = vec![w("graft"), from.clone()];
            if *force {
                v.push(w("force"));
            }
            v
        }
        Step::Ema(m) => vec![w("ema"), w(m.name())],
        Step::Cast(d) => vec![w("cast"), w(dtype_name(*d))],
        Step::WeightedSum {
            with,
            alpha,
            blocks,
        } => with_blocks(
            vec![w("weighted-sum"), with.clone(), python_float_repr(*alpha)],
            blocks,
        ),
        Step::AddDifference {
            b,
            c,
            alpha,
            blocks,
        } => with_blocks(
            vec![
                w("add-difference"),
                b.clone(),
                c.clone(),
                python_float_repr(*alpha),
            ],
            blocks,
        ),
        Step::BakeLora {
            from,
            ratio,
            blocks,
        } => with_blocks(
            vec![w("bake-lora"), from.clone(), python_float_repr(*ratio)],
            blocks,
        ),
        Step::Swap { component, from } => vec![w("swap"), w(component.name()), from.clone()],
        Step::Keep(p) => vec![w("keep"), p.clone()],
        Step::Drop(p) => vec![w("drop"), p.clone()],
        Step::Rename { from, to } => vec![w("rename"), from.clone(), to.clone()],
        Step::Convert(l) => vec![w("convert"), w(l.name())],
    }
}

fn with_blocks(mut words: Vec<String>, blocks: &Option<String>) -> Vec<String> {
    if let Some(b) = blocks {
        words.push(format!("blocks={b}"));
    }
    words
}

/// A `blocks=W,W,…` word: a weight list or preset that some base accepts
/// ([`crate::adapter::blocks::BlockWeights`]; which base is known only when it runs).
fn blocks_word(word: &str) -> Result<String> {
    let spec = word
        .strip_prefix("blocks=")
        .ok_or_else(|| Error::recipe(format!("expected 'blocks=W,W,...', not '{word}'")))?;
    let sd = crate::adapter::blocks::BlockWeights::parse(spec, false);
    let xl = crate::adapter::blocks::BlockWeights::parse(spec, true);
    match (sd, xl) {
        (Ok(w), _) => Ok(w.to_spec_or_name(spec)),
        (_, Ok(w)) => Ok(w.to_spec_or_name(spec)),
        (Err(e), _) => Err(Error::recipe(e)),
    }
}

/// The words before an optional trailing `blocks=…`, and that word read.
fn split_blocks<'a>(words: &'a [&'a str]) -> Result<(&'a [&'a str], Option<String>)> {
    match words.last() {
        Some(w) if w.starts_with("blocks=") => {
            Ok((&words[..words.len() - 1], Some(blocks_word(w)?)))
        }
        _ => Ok((words, None)),
    }
}

pub(super) fn print(recipe: &Recipe) -> String {
    let mut out = format!(
        "ldmkit-recipe {VERSION}\ninputs {}\n",
        recipe.inputs.join(" ")
    );
    for step in &recipe.steps {
        out.push_str(&step_words(step).join(" "));
        out.push('\n');
    }
    out
}

/// The weight of `step`, refused unless [`super::check_alpha`] accepts it.
fn alpha(step: &str, s: &str) -> Result<f64> {
    let a = s
        .parse::<f64>()
        .map_err(|_| Error::recipe(format!("'{s}' is not a number")))?;
    super::check_alpha(step, a)
        .map_err(|why| Error::recipe(format!("{step} alpha {why}, not '{s}'")))?;
    Ok(a)
}

/// Build a step from its words (shared by the text and URL forms).
pub(super) fn parse_step(words: &[&str], inputs: &[String]) -> Result<Step> {
    // Every word must survive the text form (space-separated, `#` comments).
    if let Some(w) = words
        .iter()
        .find(|w| w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '#'))
    {
        return Err(Error::recipe(format!("'{w}' cannot be a word of a recipe")));
    }
    if words.is_empty() {
        return Err(Error::recipe("empty step"));
    }
    let input = |s: &str| -> Result<String> {
        if inputs.iter().any(|i| i == s) {
            Ok(s.to_string())
        } else {
            Err(Error::recipe(format!(
                "'{s}' is not one of the inputs ({})",
                inputs.join(", ")
            )))
        }
    };
    let arity = |n: usize| -> Result<()> {
        if words.len() == n + 1 {
            Ok(())
        } else {
            Err(Error::recipe(format!(
                "'{}' takes {n} argument(s), got {}",
                words[0],
                words.len() - 1
            )))
        }
    };
    Ok(match words[0] {
        "open" => {
            arity(1)?;
            Step::Open(input(words[1])?)
        }
        "strip" => {
            arity(0)?;
            Step::Strip
        }
        "fill" => {
            arity(1)?;
            Step::Fill(input(words[1])?)
        }
        "graft" => {
            let force = words.len() == 3 && words[2] == "force";
            if !force {
                arity(1)?;
            }
            Step::Graft {
                from: input(words[1])?,
                force,
            }
        }
        "ema" => {
            arity(1)?;
            Step::Ema(EmaMode::parse(words[1]).ok_or_else(|| {
                Error::recipe(format!("ema takes drop, use or keep, not '{}'", words[1]))
            })?)
        }
        "cast" => {
            arity(1)?;
            Step::Cast(parse_dtype(words[1]).ok_or_else(|| {
                Error::recipe(format!("cast takes f16, bf16 or f32, not '{}'", words[1]))
            })?)
        }
        "weighted-sum" | "add-difference" | "bake-lora" => {
            let (words, blocks) = split_blocks(words)?;
            let arity = |n: usize| -> Result<()> {
                if words.len() == n + 1 {
                    Ok(())
                } else {
                    Err(Error::recipe(format!(
                        "'{}' takes {n} argument(s) and an optional blocks=..., got {}",
                        words[0],
                        words.len() - 1
                    )))
                }
            };
            match words[0] {
                "weighted-sum" => {
                    arity(2)?;
                    Step::WeightedSum {
                        with: input(words[1])?,
                        alpha: alpha(words[0], words[2])?,
                        blocks,
                    }
                }
                "add-difference" => {
                    arity(3)?;
                    Step::AddDifference {
                        b: input(words[1])?,
                        c: input(words[2])?,
                        alpha: alpha(words[0], words[3])?,
                        blocks,
                    }
                }
                _ => {
                    arity(2)?;
                    let ratio = words[2]
                        .parse::<f64>()
                        .ok()
                        .filter(|r| r.is_finite())
                        .ok_or_else(|| {
                            Error::recipe(format!(
                                "bake-lora ratio must be a finite number, not '{}'",
                                words[2]
                            ))
                        })?;
                    Step::BakeLora {
                        from: input(words[1])?,
                        ratio,
                        blocks,
                    }
                }
            }
        }
        "swap" => {
            arity(2)?;
            Step::Swap {
                component: parse_component(words[1]).ok_or_else(|| {
                    Error::recipe(format!(
                        "swap takes unet, vae or text_encoder, not '{}'",
                        words[1]
                    ))
                })?,
                from: input(words[2])?,
            }
        }
        "keep" => {
            arity(1)?;
            Step::Keep(words[1].to_string())
        }
        "drop" => {
            arity(1)?;
            Step::Drop(words[1].to_string())
        }
        "rename" => {
            arity(2)?;
            Step::Rename {
                from: words[1].to_string(),
                to: words[2].to_string(),
            }
        }
        "convert" => {
            arity(1)?;
            Step::Convert(Layout::parse(words[1]).ok_or_else(|| {
                Error::recipe(format!(
                    "convert takes ldm or diffusers, not '{}'",
                    words[1]
                ))
            })?)
        }
        other => return Err(Error::recipe(format!("unknown step '{other}'"))),
    })
}

/// Check the version word and input names; shared by both forms.
pub(super) fn check_header(version: &str, inputs: &[&str]) -> Result<Vec<String>> {
    let v: u32 = version
        .parse()
        .map_err(|_| Error::recipe(format!("bad version '{version}'")))?;
    if v != VERSION {
        return Err(Error::recipe(format!(
            "version {v} is not supported by this ldmkit (it reads version {VERSION})"
        )));
    }
    if inputs.is_empty() {
        return Err(Error::recipe("names no inputs"));
    }
    let mut names: Vec<String> = Vec::new();
    for &name in inputs {
        let ok = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !name.is_empty();
        if !ok || names.iter().any(|n| n == name) {
            return Err(Error::recipe(format!(
                "bad or repeated input name '{name}'"
            )));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

/// Check the step sequence: `open` first and only there.
pub(super) fn check_steps(steps: &[Step]) -> Result<()> {
    match steps.first() {
        Some(Step::Open(_)) => {}
        _ => return Err(Error::recipe("the first step must be 'open INPUT'")),
    }
    if steps[1..].iter().any(|s| matches!(s, Step::Open(_))) {
        return Err(Error::recipe("'open' may only be the first step"));
    }
    Ok(())
}

pub(super) fn parse(text: &str) -> Result<Recipe> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty());
    let at = |n: usize, e: Error| match e {
        Error::Recipe(m) => Error::recipe(format!("line {n}: {m}")),
        other => other,
    };
    let (n, first) = lines.next().ok_or_else(|| Error::recipe("is empty"))?;
    let version = first
        .strip_prefix("ldmkit-recipe")
        .map(str::trim)
        .ok_or_else(|| {
            Error::recipe(format!(
                "line {n}: must start with 'ldmkit-recipe {VERSION}'"
            ))
        })?;
    let (n, second) = lines
        .next()
        .ok_or_else(|| Error::recipe("has no 'inputs' line"))?;
    let words: Vec<&str> = second.split_whitespace().collect();
    if words.first() != Some(&"inputs") {
        return Err(Error::recipe(format!(
            "line {n}: expected 'inputs NAME...'"
        )));
    }
    let inputs = check_header(version, &words[1..]).map_err(|e| at(n, e))?;
    let mut steps = Vec::new();
    for (n, line) in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        steps.push(parse_step(&words, &inputs).map_err(|e| at(n, e))?);
    }
    check_steps(&steps)?;
    Ok(Recipe { inputs, steps })
}
