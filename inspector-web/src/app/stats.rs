//! One tensor's statistics and histogram (streamed by the engine when a key is clicked).

use leptos::prelude::*;
use serde_json::Value;

#[component]
pub fn Stats(key: String, stats: Value) -> impl IntoView {
    let counts: Vec<f64> = stats["histogram"]["counts"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let peak = counts.iter().cloned().fold(1.0, f64::max);
    let n = |k: &str| {
        stats[k]
            .as_f64()
            .map_or("-".to_string(), |v| format!("{v:.4e}"))
    };
    view! {
        <section class="stats" id="stats">
            <h3>{key}</h3>
            <p>{format!("min {}  max {}  mean {}  std {}  NaN {}  Inf {}", n("min"), n("max"), n("mean"), n("std"), stats["nan"], stats["inf"])}</p>
            <div class="histogram">
                {counts.into_iter().map(|c| view! { <span class="hbar" style=format!("height:{:.1}%", 100.0 * c / peak)></span> }).collect_view()}
            </div>
            <p class="axis">{format!("{} … {}", n("min"), n("max"))}</p>
        </section>
    }
}
