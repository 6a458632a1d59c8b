//! `ldmkit export RUN --base RELEASE -o OUT`: the seed's merge-back for a training run. The
//! run's checkpoint already holds the UNet (or its EMA) under the original names, so this is
//! `ldmkit merge CHECKPOINT BASE`: the run's UNet plus every tensor of BASE it lacks (VAE,
//! text encoder), converted to the original layout if BASE is a diffusers folder, and
//! written by ldmkit-core's streaming writers.

use super::rewrite;
use super::{report_error, EXIT_ERROR};
use crate::cli::ExportArgs;
use crate::train::checkpoint;
use ldmkit_core::ops::EmaMode;
use ldmkit_core::recipe::{parse_dtype, presets, Layout, Step};

pub fn run(a: &ExportArgs) -> u8 {
    let all = checkpoint::list(&a.run);
    let chosen = match a.step {
        Some(s) => all.iter().find(|(step, _)| *step == s),
        None => all.last(),
    };
    let Some((step, dir)) = chosen else {
        let what = match a.step {
            Some(s) => format!("has no complete checkpoint at step {s}"),
            None => "has no complete checkpoint (is it a training run folder?)".to_string(),
        };
        report_error(&a.run, what);
        return EXIT_ERROR;
    };
    let file = dir.join(if a.ema {
        "ema.safetensors"
    } else {
        "unet.safetensors"
    });
    if !file.is_file() {
        report_error(
            &a.run,
            format!("step {step} has no EMA weights (train with --ema)"),
        );
        return EXIT_ERROR;
    }
    let dtype = match &a.out.dtype {
        None => None,
        Some(s) => match parse_dtype(s) {
            Some(d) => Some(d),
            None => {
                eprintln!("error: --dtype takes f16, bf16 or f32, not '{s}'");
                return EXIT_ERROR;
            }
        },
    };
    // Always the original layout, whatever the base's (a diffusers folder works too).
    let mut recipe = presets::merge(EmaMode::Drop, None);
    if a.base.is_dir() {
        // Fill needs both in one layout: the run's UNet goes to diffusers names first.
        let fill = recipe
            .steps
            .iter()
            .position(|s| matches!(s, Step::Fill(_)))
            .expect("merge fills");
        recipe.steps.insert(fill, Step::Convert(Layout::Diffusers));
    }
    recipe.steps.push(Step::Convert(Layout::Ldm));
    recipe.steps.extend(dtype.map(Step::Cast));
    let intro = format!("exporting step {step} ({})", file.display());
    rewrite::run_with_intro(&recipe, &[file, a.base.clone()], &a.out, Some(intro))
}
