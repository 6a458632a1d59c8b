//! The diffusers folder writer: one safetensors file and one `config.json` per component,
//! plus `model_index.json` and a scheduler config, as `save_pretrained` lays them out.
//!
//! No tokenizer is written: CLIP's vocabulary is not in a checkpoint. `model_index.json`
//! marks it absent, so components load on their own (`UNet2DConditionModel.from_pretrained(
//! folder, subfolder="unet")`) and a pipeline loads when given a tokenizer.

use crate::error::{Error, Result};
use crate::layout::config::{self, DIFFUSERS_VERSION};
use crate::layout::COMPONENTS;
use crate::ops::Working;
use crate::plan::{LazyTensor, Part, Plan};
use indexmap::IndexMap;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn json_file(value: &Value) -> Plan {
    let mut text = serde_json::to_string_pretty(value).expect("json serializes");
    text.push('\n');
    let mut plan = Plan::default();
    plan.push(Part::Bytes(text.into_bytes()));
    plan
}

/// Plan every file of a diffusers folder for `work` (in the diffusers layout).
pub fn diffusers_folder(work: &Working) -> Result<Vec<(String, Plan)>> {
    let mut groups: IndexMap<&str, Vec<(String, LazyTensor)>> = IndexMap::new();
    for (key, e) in &work.state_dict {
        let (component, rest) = key
            .split_once('.')
            .filter(|(c, _)| COMPONENTS.contains(c))
            .ok_or_else(|| Error::op(format!("'{key}' belongs to no diffusers component")))?;
        groups
            .entry(component)
            .or_default()
            .push((rest.to_string(), e.tensor.clone()));
    }
    let unet_linear = groups.get("unet").is_some_and(|u| {
        let t: IndexMap<&str, &LazyTensor> = u.iter().map(|(k, t)| (k.as_str(), t)).collect();
        config::linear_projection(&t)
    });
    let sdxl = groups.contains_key("text_encoder_2");
    let mut files = Vec::new();
    let mut index = serde_json::Map::new();
    index.insert(
        "_class_name".into(),
        json!(if sdxl {
            "StableDiffusionXLPipeline"
        } else {
            "StableDiffusionPipeline"
        }),
    );
    index.insert("_diffusers_version".into(), json!(DIFFUSERS_VERSION));
    let metadata = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    for (component, tensors) in &groups {
        let view: IndexMap<&str, &LazyTensor> =
            tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let (cfg, file, library, class) = match *component {
            "unet" => (
                config::unet(&view)?,
                "diffusion_pytorch_model.safetensors",
                "diffusers",
                "UNet2DConditionModel",
            ),
            "vae" => (
                config::vae(&view, sdxl)?,
                "diffusion_pytorch_model.safetensors",
                "diffusers",
                "AutoencoderKL",
            ),
            other => {
                // SD 2.x's only and SDXL's second text encoder are OpenCLIP towers.
                let open_clip =
                    other == "text_encoder_2" || (other == "text_encoder" && unet_linear && !sdxl);
                let cfg = config::text_encoder(&view, open_clip)?;
                let class = cfg["architectures"][0]
                    .as_str()
                    .unwrap_or("CLIPTextModel")
                    .to_string();
                files.push((format!("{other}/config.json"), json_file(&cfg)));
                files.push((
                    format!("{other}/model.safetensors"),
                    super::safetensors::safetensors(tensors, &metadata)?,
                ));
                index.insert(other.to_string(), json!(["transformers", class]));
                continue;
            }
        };
        files.push((format!("{component}/config.json"), json_file(&cfg)));
        files.push((
            format!("{component}/{file}"),
            super::safetensors::safetensors(tensors, &metadata)?,
        ));
        index.insert(component.to_string(), json!([library, class]));
    }
    let scheduler = json!({
        "_class_name": if sdxl { "EulerDiscreteScheduler" } else { "PNDMScheduler" },
        "_diffusers_version": DIFFUSERS_VERSION,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": false,
        "num_train_timesteps": 1000,
        "prediction_type": "epsilon",
        "set_alpha_to_one": false,
        "skip_prk_steps": true,
        "steps_offset": 1,
        "trained_betas": null,
    });
    files.push((
        "scheduler/scheduler_config.json".into(),
        json_file(&scheduler),
    ));
    index.insert(
        "scheduler".into(),
        json!(["diffusers", scheduler["_class_name"].clone()]),
    );
    for absent in ["tokenizer", "safety_checker", "feature_extractor"] {
        index.insert(absent.into(), json!([null, null]));
    }
    if sdxl {
        index.remove("safety_checker");
        index.remove("feature_extractor");
        index.insert("tokenizer_2".into(), json!([null, null]));
    }
    files.push(("model_index.json".into(), json_file(&Value::Object(index))));
    Ok(files)
}
