//! `ldmkit inspect`.

use crate::util::{fixture, inspect_json, ldmkit, stderr, stdout};

#[test]
fn lightning_training_checkpoint_summary() {
    let j = inspect_json(&fixture("sd1_training.ckpt"));
    assert_eq!(j["format"], "torch-zip");
    assert_eq!(j["architecture"], "sd1");
    for c in [
        "unet",
        "vae",
        "text_encoder",
        "ema",
        "optimizer",
        "schedule",
    ] {
        assert!(
            j["components"][c]["tensors"].as_u64().unwrap() > 0,
            "component {c}"
        );
    }
    // LitEma holds one shadow per UNet parameter, plus decay and num_updates.
    assert_eq!(
        j["components"]["ema"]["params"].as_u64().unwrap(),
        j["components"]["unet"]["params"].as_u64().unwrap() + 2
    );
    let l = &j["metadata"]["lightning"];
    assert!(l["global_step"].as_i64().unwrap() > 0);
    for extra in [
        "optimizer_states",
        "lr_schedulers",
        "callbacks",
        "loops",
        "hyper_parameters",
    ] {
        assert!(
            l["extras"].as_array().unwrap().iter().any(|e| e == extra),
            "{extra}"
        );
    }
    let names: Vec<&str> = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"state_dict/model.diffusion_model.out.2.weight"));
    assert!(names.contains(&"state_dict/model_ema.diffusion_modelinput_blocks00weight"));
    assert!(names
        .iter()
        .any(|n| n.starts_with("optimizer_states/0/state/") && n.ends_with("/exp_avg_sq")));
    // OmegaConf hyper-parameters are opaque globals outside torch's allowlist.
    assert!(j["unsafe_globals"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g.as_str().unwrap().starts_with("omegaconf.")));
}

#[test]
fn human_summary_names_what_matters() {
    let out = ldmkit(&["inspect", fixture("sd1_training.ckpt").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "torch zip",
        "Stable Diffusion 1.x",
        "unet",
        "optimizer",
        "lightning",
        "extras:",
        "safety",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn filter_lists_only_matching_tensors() {
    let f = fixture("sd1_release.ckpt");
    let j = crate::util::ldmkit(&[
        "inspect",
        "--json",
        "--filter",
        "*first_stage_model*",
        f.to_str().unwrap(),
    ]);
    let j: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let tensors = j["tensors"].as_array().unwrap();
    assert!(!tensors.is_empty());
    assert!(tensors
        .iter()
        .all(|t| t["name"].as_str().unwrap().contains("first_stage_model")));
    let out = ldmkit(&["inspect", "--filter", "*attn2.to_k*", f.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("attn2.to_k.weight"), "{text}");
    assert!(!text.contains("first_stage_model.encoder"), "{text}");
}

#[test]
fn formats_are_detected_from_content() {
    assert_eq!(
        inspect_json(&fixture("legacy.pt"))["format"],
        "torch-legacy"
    );
    let st = inspect_json(&fixture("sd1_release.safetensors"));
    assert_eq!(st["format"], "safetensors");
    assert_eq!(st["architecture"], "sd1");
    assert_eq!(st["metadata"]["container"]["metadata"]["format"], "pt");
    assert_eq!(
        inspect_json(&fixture("deflated.ckpt"))["metadata"]["container"]["deflated"],
        true
    );
    assert_eq!(
        inspect_json(&fixture("folder_name.pt"))["metadata"]["container"]["prefix"],
        "weird-name.v2"
    );
}

#[test]
fn architectures() {
    assert_eq!(
        inspect_json(&fixture("sdxl_like.safetensors"))["architecture"],
        "sdxl-base"
    );
    assert_eq!(
        inspect_json(&fixture("sd2_like.safetensors"))["architecture"],
        "sd2"
    );
    let inpaint = inspect_json(&fixture("inpaint_like.safetensors"));
    assert!(
        inpaint["architecture"]
            .as_str()
            .unwrap()
            .ends_with("-inpainting"),
        "{}",
        inpaint["architecture"]
    );
}

#[test]
fn dtypes_use_torch_names() {
    let j = inspect_json(&fixture("release_bf16.ckpt"));
    assert!(j["dtypes"]["bfloat16"]["tensors"].as_u64().unwrap() > 0);
    assert!(
        j["dtypes"]["int64"]["tensors"].as_u64().unwrap() > 0,
        "position_ids stay int64"
    );
    let j = inspect_json(&fixture("release_fp16.ckpt"));
    assert!(j["dtypes"]["float16"]["tensors"].as_u64().unwrap() > 0);
}

#[test]
fn shared_storages_and_views() {
    let j = inspect_json(&fixture("shared_views.pt"));
    let s = &j["metadata"]["storage"];
    assert!(s["shared_tensors"].as_u64().unwrap() >= 2, "{s}");
    assert!(s["non_contiguous"].as_u64().unwrap() >= 1, "{s}");
}

#[test]
fn missing_file_is_a_one_line_error() {
    let out = ldmkit(&["inspect", "/nonexistent/model.ckpt"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "error: /nonexistent/model.ckpt: no such file"
    );
    let out = ldmkit(&["inspect", "/tmp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: /tmp: "),
        "{}",
        stderr(&out)
    );
}
