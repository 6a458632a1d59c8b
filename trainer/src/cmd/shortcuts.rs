//! The rewrite commands: each builds its recipe and hands it to [`super::rewrite::run`].

use super::rewrite;
use super::EXIT_ERROR;
use crate::cli::*;
use ldmkit_core::ops::EmaMode;
use ldmkit_core::recipe::{check_alpha, parse_dtype, presets, Layout, Recipe, Step};
use ldmkit_core::value::python_float_repr;
use ldmkit_core::DType;
use std::path::{Path, PathBuf};

fn dtype(arg: &Option<String>) -> Result<Option<DType>, u8> {
    match arg {
        None => Ok(None),
        Some(s) => parse_dtype(s).map(Some).ok_or_else(|| {
            eprintln!("error: --dtype takes f16, bf16 or f32, not '{s}'");
            EXIT_ERROR
        }),
    }
}

fn ema(use_ema: bool, keep: bool) -> EmaMode {
    match (use_ema, keep) {
        (true, _) => EmaMode::Use,
        (_, true) => EmaMode::Keep,
        _ => EmaMode::Drop,
    }
}

/// `--alpha` of `step`, refused in one line unless the recipe would accept it.
fn alpha(step: &str, alpha: f64) -> Result<f64, u8> {
    check_alpha(step, alpha).map(|()| alpha).map_err(|why| {
        let shown = python_float_repr(alpha);
        let hint = if step == "weighted-sum" && alpha.is_finite() {
            let sep = if alpha < 0.0 { "=" } else { " " };
            format!(" (to extrapolate: ldmkit add-difference A B A --alpha{sep}{shown})")
        } else {
            String::new()
        };
        eprintln!("error: --alpha {why}, not {shown}{hint}");
        EXIT_ERROR
    })
}

macro_rules! dtype_or_exit {
    ($e:expr) => {
        match dtype($e) {
            Ok(d) => d,
            Err(code) => return code,
        }
    };
}

pub fn strip(a: &StripArgs) -> u8 {
    let r = presets::strip(ema(a.ema, false), dtype_or_exit!(&a.out.dtype));
    rewrite::run(&r, std::slice::from_ref(&a.input), &a.out)
}

pub fn merge(a: &MergeArgs) -> u8 {
    let r = presets::merge(ema(a.ema, a.keep_ema), dtype_or_exit!(&a.out.dtype));
    rewrite::run(&r, &[a.training.clone(), a.base.clone()], &a.out)
}

pub fn graft(a: &GraftArgs) -> u8 {
    let r = presets::graft(a.force, dtype_or_exit!(&a.out.dtype));
    rewrite::run(&r, &[a.base.clone(), a.training.clone()], &a.out)
}

pub fn convert(a: &ConvertArgs) -> u8 {
    let layout = Layout::parse(&a.layout).expect("clap checks the value");
    let r = presets::convert(layout, ema(a.ema, false), dtype_or_exit!(&a.out.dtype));
    rewrite::run(&r, std::slice::from_ref(&a.input), &a.out)
}

pub fn weighted_sum(a: &WeightedSumArgs) -> u8 {
    let Ok(alpha) = alpha("weighted-sum", a.alpha) else {
        return EXIT_ERROR;
    };
    let mut r = presets::weighted_sum(alpha, dtype_or_exit!(&a.out.dtype));
    for step in &mut r.steps {
        if let Step::WeightedSum { blocks, .. } = step {
            *blocks = a.blocks.clone();
        }
    }
    rewrite::run(&r, &[a.a.clone(), a.b.clone()], &a.out)
}

pub fn add_difference(a: &AddDifferenceArgs) -> u8 {
    let Ok(alpha) = alpha("add-difference", a.alpha) else {
        return EXIT_ERROR;
    };
    let mut r = presets::add_difference(alpha, dtype_or_exit!(&a.out.dtype));
    for step in &mut r.steps {
        if let Step::AddDifference { blocks, .. } = step {
            *blocks = a.blocks.clone();
        }
    }
    rewrite::run(&r, &[a.a.clone(), a.b.clone(), a.c.clone()], &a.out)
}

/// `FILE[:RATIO[:BLOCKS]]`, read from the right so that a file name may hold colons.
fn lora_arg(arg: &str) -> Result<(PathBuf, f64, Option<String>), String> {
    if Path::new(arg).exists() {
        return Ok((PathBuf::from(arg), 1.0, None));
    }
    let ratio = |s: &str| s.parse::<f64>().ok().filter(|r| r.is_finite());
    if let Some((rest, last)) = arg.rsplit_once(':') {
        if let Some(r) = ratio(last) {
            return Ok((PathBuf::from(rest), r, None));
        }
        if let Some((file, r)) = rest
            .rsplit_once(':')
            .and_then(|(f, r)| Some((f, ratio(r)?)))
        {
            return Ok((PathBuf::from(file), r, Some(last.to_string())));
        }
        if Path::new(rest).exists() {
            return Err(format!("'{last}' is not a ratio (a finite number)"));
        }
    }
    Ok((PathBuf::from(arg), 1.0, None))
}

pub fn bake_lora(a: &BakeLoraArgs) -> u8 {
    let mut paths = vec![a.model.clone()];
    let mut loras = Vec::new();
    for arg in &a.loras {
        match lora_arg(arg) {
            Ok((path, ratio, blocks)) => {
                paths.push(path);
                loras.push((ratio, blocks.or_else(|| a.blocks.clone())));
            }
            Err(e) => {
                eprintln!("error: {arg}: {e}");
                return EXIT_ERROR;
            }
        }
    }
    let r = presets::bake_lora(&loras, dtype_or_exit!(&a.out.dtype));
    rewrite::run(&r, &paths, &a.out)
}

pub fn bake_vae(a: &BakeVaeArgs) -> u8 {
    let r = presets::bake_vae(dtype_or_exit!(&a.out.dtype));
    rewrite::run(&r, &[a.model.clone(), a.vae.clone()], &a.out)
}

pub fn apply(a: &ApplyArgs) -> u8 {
    let text = if a.recipe.contains("#recipe=") {
        a.recipe.clone()
    } else {
        match std::fs::read_to_string(&a.recipe) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {}: {e}", a.recipe);
                return EXIT_ERROR;
            }
        }
    };
    let dtype = dtype_or_exit!(&a.out.dtype);
    match Recipe::parse_any(text.trim()) {
        Ok(mut r) => {
            r.steps.extend(dtype.map(Step::Cast));
            rewrite::run(&r, &a.inputs, &a.out)
        }
        Err(e) => {
            eprintln!("error: {}: {e}", a.recipe);
            EXIT_ERROR
        }
    }
}
