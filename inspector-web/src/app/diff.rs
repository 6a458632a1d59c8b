//! The diff view: what changed between two checkpoints, per component (bars) and per UNet
//! block (columns in the UNet's own order, down the encoder, through the middle, up the
//! decoder), plus the keys only one side has and the tensors that changed most.

use leptos::prelude::*;
use serde_json::Value;

/// Relative change as a percentage with a sensible number of digits.
fn percent(relative: f64) -> String {
    if !relative.is_finite() {
        return "∞".into();
    }
    let p = 100.0 * relative;
    match p {
        0.0 => "0".into(),
        p if p < 0.01 => format!("{p:.1e} %"),
        p if p < 10.0 => format!("{p:.2} %"),
        p => format!("{p:.0} %"),
    }
}

fn groups(v: &Value) -> Vec<(String, f64, u64, u64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|g| {
                    (
                        g["name"].as_str().unwrap_or("").to_string(),
                        g["relative"].as_f64().unwrap_or(f64::INFINITY),
                        g["changed"].as_u64().unwrap_or(0),
                        g["tensors"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The largest finite value, for scaling bars (at least a tiny positive number).
fn scale(values: impl Iterator<Item = f64>) -> f64 {
    values.filter(|v| v.is_finite()).fold(1e-30, f64::max)
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// At most this many names are listed per section.
const LIST: usize = 12;

#[component]
fn NameList(title: String, names: Vec<String>) -> impl IntoView {
    (!names.is_empty()).then(|| {
        let more = names.len().saturating_sub(LIST);
        view! {
            <details class="names">
                <summary>{format!("{title} ({})", names.len())}</summary>
                <ul>
                    {names.into_iter().take(LIST).map(|n| view! { <li><code>{n}</code></li> }).collect_view()}
                    {(more > 0).then(|| view! { <li class="muted">{format!("… and {more} more")}</li> })}
                </ul>
            </details>
        }
    })
}

#[component]
pub fn DiffView(a: String, b: String, report: Value) -> impl IntoView {
    let components = groups(&report["components"]);
    let blocks = groups(&report["unet_blocks"]);
    let component_max = scale(components.iter().map(|c| c.1));
    let block_max = scale(blocks.iter().map(|c| c.1));
    let mut top: Vec<Value> = report["tensors"].as_array().cloned().unwrap_or_default();
    let rel = |t: &Value| t["relative"].as_f64().unwrap_or(f64::INFINITY);
    top.sort_by(|x, y| rel(y).total_cmp(&rel(x)));
    let changed = top.iter().filter(|t| rel(t) > 0.0).count();
    top.truncate(LIST);
    let identical = report["identical"].as_u64().unwrap_or(0);
    view! {
        <section class="diff" id="diff">
            <h2>"Diff"</h2>
            <p><strong>{a.clone()}</strong>" → "<strong>{b.clone()}</strong>
                {format!(": {changed} tensors changed, {identical} identical; relative change ‖B−A‖ / ‖A‖")}</p>
            <NameList title=format!("only in {a}") names=names(&report["only_in_a"])/>
            <NameList title=format!("only in {b}") names=names(&report["only_in_b"])/>
            <NameList title="shape or dtype differs".to_string() names=names(&report["mismatched"])/>
            <h3>"Per component"</h3>
            <div class="bars" id="diff-components">
                {components.into_iter().map(|(name, relative, changed, tensors)| {
                    let width = if relative.is_finite() { 100.0 * relative / component_max } else { 100.0 };
                    view! {
                        <div class="bar-row">
                            <span class="bar-label">{name}</span>
                            <span class="bar"><span class="fill change" style=format!("width:{width:.1}%")></span></span>
                            <span class="bar-value">{format!("{} · {changed} of {tensors} tensors changed", percent(relative))}</span>
                        </div>
                    }
                }).collect_view()}
            </div>
            {(!blocks.is_empty()).then(|| view! {
                <h3>"Per UNet block"</h3>
                <div class="columns" id="diff-blocks">
                    {blocks.into_iter().map(|(name, relative, changed, tensors)| {
                        let height = if relative.is_finite() { 100.0 * relative / block_max } else { 100.0 };
                        let title = format!("{name}: {} ({changed} of {tensors} tensors changed)", percent(relative));
                        let short = name.replace("input_blocks.", "in ").replace("output_blocks.", "out ")
                            .replace("down_blocks.", "down ").replace("up_blocks.", "up ").replace("middle_block", "mid").replace("mid_block", "mid");
                        view! {
                            <div class="column" title=title>
                                <span class="column-bar"><span class="column-fill" style=format!("height:{height:.1}%")></span></span>
                                <span class="column-label">{short}</span>
                            </div>
                        }
                    }).collect_view()}
                </div>
                <p class="axis">{format!("tallest: {}", percent(block_max))}</p>
            })}
            <h3>"Most changed tensors"</h3>
            <table class="keys">
                {top.into_iter().map(|t| view! {
                    <tr><td><code>{t["name"].as_str().unwrap_or("").to_string()}</code></td>
                        <td>{percent(rel(&t))}</td>
                        <td class="muted">{format!("max |Δ| {:.3e}", t["max_abs"].as_f64().unwrap_or(0.0))}</td></tr>
                }).collect_view()}
            </table>
        </section>
    }
}
