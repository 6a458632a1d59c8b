//! The rewrite actions the page offers, each a recipe preset, and the recipe in the URL.

use ldmkit_core::ops::EmaMode;
use ldmkit_core::recipe::{self, presets, Layout, Recipe, Step};
use wasm_bindgen::JsValue;

/// The actions offered, each a recipe preset.
pub const ACTIONS: &[(&str, &str)] = &[
    (
        "strip",
        "Strip to a release (drop EMA, optimizer, training state)",
    ),
    ("ema", "Extract EMA weights"),
    (
        "merge",
        "Merge-back: training checkpoint + its base (2 files)",
    ),
    (
        "graft",
        "Graft: base weights into a training checkpoint (base, training)",
    ),
    ("weighted-sum", "Weighted sum A·(1−α)+B·α (2 files)"),
    ("add-difference", "Add difference A+(B−C)·α (3 files)"),
    ("bake-vae", "Bake VAE: model + VAE (2 files)"),
    (
        "bake-lora",
        "Bake LoRAs: model + one or more LoRA / LyCORIS files, at ratio α",
    ),
    (
        "to-diffusers",
        "Convert to a diffusers folder (downloads as .zip)",
    ),
    (
        "to-ldm",
        "Convert a diffusers folder to one LDM file (A1111, ComfyUI)",
    ),
];

/// The output format an action needs, if it needs one.
pub fn required_format(action: &str) -> Option<&'static str> {
    (action == "to-diffusers").then_some("diffusers")
}

/// The form's recipe: `alpha` is the merge weight or the LoRA ratio, `blocks` optional block
/// weights, `inputs` how many inputs are open (bake-lora bakes all but the first).
pub fn build_recipe(action: &str, dtype: &str, alpha: f64, blocks: &str, inputs: usize) -> Recipe {
    let dtype = recipe::parse_dtype(dtype);
    let blocks = Some(blocks.trim().to_string()).filter(|b| !b.is_empty());
    let mut r = match action {
        "ema" => presets::strip(EmaMode::Use, dtype),
        "merge" => presets::merge(EmaMode::Drop, dtype),
        "graft" => presets::graft(false, dtype),
        "weighted-sum" => presets::weighted_sum(alpha, dtype),
        "add-difference" => presets::add_difference(alpha, dtype),
        "bake-vae" => presets::bake_vae(dtype),
        "bake-lora" => presets::bake_lora(
            &vec![(alpha, blocks.clone()); inputs.saturating_sub(1).max(1)],
            dtype,
        ),
        "to-diffusers" => presets::convert(Layout::Diffusers, EmaMode::Drop, dtype),
        "to-ldm" => presets::convert(Layout::Ldm, EmaMode::Drop, dtype),
        _ => presets::strip(EmaMode::Drop, dtype),
    };
    for step in &mut r.steps {
        match step {
            Step::WeightedSum { blocks: b, .. } | Step::AddDifference { blocks: b, .. } => {
                *b = blocks.clone()
            }
            _ => {}
        }
    }
    r
}

/// The URL fragment (`#recipe=1;...` when the page was opened from a link).
pub fn location_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

/// Keep the current recipe in the URL fragment, so the address bar is the share link.
pub fn set_location_hash(recipe: &Recipe) {
    let url = recipe::to_url(recipe, "");
    if let Some(w) = web_sys::window() {
        if let Ok(history) = w.history() {
            let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&url));
        }
    }
}
