//! The adapter section of `ldmkit inspect`: what the file is, for which base, its ranks and
//! strengths, modules per block drawn as bars, and the training metadata read as a table.

use crate::format::{bar, count};
use ldmkit_core::adapter::summary::AdapterReport;
use ldmkit_core::adapter::Spelling;
use ldmkit_core::value::python_float_repr;

/// Tags shown by default (`--json` has all).
const TAGS_SHOWN: usize = 20;

fn num(v: f64) -> String {
    python_float_repr(v)
}

fn spread(typical: Option<String>, min: String, max: String) -> String {
    match typical {
        _ if min == max => min,
        Some(t) => format!("{t} ({min}–{max})"),
        None => format!("{min}–{max}"),
    }
}

pub fn print(a: &AdapterReport, list_modules: bool) {
    let spelling = match a.spelling {
        Spelling::Kohya => "kohya names",
        Spelling::Diffusers => "diffusers/PEFT names",
    };
    println!(
        "  adapter       {} ({spelling}) for {}  [{}]",
        a.kind,
        a.base_label(),
        a.base_evidence
    );
    let mut networks: Vec<(String, usize)> = Vec::new();
    for m in &a.modules {
        let label = m.network.label().to_string();
        match networks.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => networks.push((label, 1)),
        }
    }
    let nets: Vec<String> = networks.iter().map(|(l, n)| format!("{l} {n}")).collect();
    println!(
        "  modules       {} modules: {}",
        a.modules.len(),
        nets.join(", ")
    );
    if let Some(r) = &a.rank_spread {
        println!(
            "  rank          {}",
            spread(
                a.rank.map(|r| r.to_string()),
                (r.min as u64).to_string(),
                (r.max as u64).to_string()
            )
        );
    }
    if let Some(s) = &a.alpha_spread {
        println!(
            "  alpha         {}",
            spread(a.alpha.map(num), num(s.min), num(s.max))
        );
    }
    let s = &a.strength_spread;
    println!(
        "  strength      {} per unit ratio (alpha / rank)",
        spread(None, num(s.min), num(s.max))
    );
    if !a.unsupported.is_empty() {
        println!(
            "  unsupported   {} modules of kinds ldmkit does not apply, e.g. {} ({})",
            a.unsupported.len(),
            a.unsupported[0].0,
            a.unsupported[0].1
        );
    }
    if !a.other_tensors.is_empty() {
        println!(
            "  other         {} tensors belong to no module, e.g. {}",
            a.other_tensors.len(),
            a.other_tensors[0]
        );
    }

    println!();
    println!("  {:<8}{:>8}{:>10}", "block", "modules", "params");
    let most = a.blocks.iter().map(|b| b.params).max().unwrap_or(1).max(1) as f64;
    for b in &a.blocks {
        println!(
            "  {:<8}{:>8}{:>10}  {}",
            b.block,
            b.modules,
            count(b.params),
            bar(b.params as f64 / most, 24)
        );
    }

    if list_modules {
        println!();
        println!(
            "  {:<72} {:>5} {:>7} {:>9}  kind",
            "module", "rank", "alpha", "strength"
        );
        for m in &a.modules {
            println!(
                "  {:<72} {:>5} {:>7} {:>9}  {}{}",
                m.name,
                m.rank.map_or("-".into(), |r| r.to_string()),
                m.alpha.map_or("-".into(), num),
                num(m.strength),
                m.kind.label(),
                if m.dora { " + DoRA" } else { "" }
            );
        }
    }

    let t = &a.training;
    if !t.settings.is_empty() || !t.datasets.is_empty() {
        println!();
        println!("  training (kohya metadata)");
        for (label, _, v) in &t.settings {
            let v: String = v.chars().take(100).collect();
            println!("    {label:<28}{v}");
        }
        for d in &t.datasets {
            let n = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
            println!(
                "    {:<28}{} images × {} repeats",
                format!("dataset {}", d.folder),
                n(d.images),
                n(d.repeats)
            );
        }
    }
    if !t.tags.is_empty() {
        println!();
        let over = t
            .tagged_images
            .map_or(String::new(), |n| format!(" over {n} images"));
        println!(
            "  tags          {} tags{over}, most frequent first (trigger words lead):",
            t.tags.len()
        );
        let shown: Vec<String> = t
            .tags
            .iter()
            .take(TAGS_SHOWN)
            .map(|(tag, n)| format!("{tag} ({n})"))
            .collect();
        println!("    {}", shown.join(", "));
    }
    if let Some(trigger) = &t.trigger {
        println!("  trigger       {trigger}");
    }
    if !t.modelspec.is_empty() {
        println!();
        println!("  modelspec");
        for (k, v) in &t.modelspec {
            let v: String = v.chars().take(100).collect();
            println!("    {k:<28}{v}");
        }
    }
    for (k, why) in &t.unreadable {
        println!("  warning: metadata {k} is {why}");
    }
    for c in &a.claims {
        println!(
            "  claims        the metadata says {} {}, the tensors hold {}",
            c.what, c.claimed, c.held
        );
    }
}
