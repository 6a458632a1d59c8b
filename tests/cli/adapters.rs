//! LoRA and LyCORIS adapters: recognised and inspected (tests/fixtures/adapters, written by
//! peft, diffusers and lycoris-lora), baked into tiny SD 1.x / SDXL checkpoints exactly as
//! diffusers' `load_lora_weights` + `fuse_lora` and LyCORIS' functional ΔW do
//! (tests/python/bake_ref.py), hashed as A1111 and kohya define it
//! (tests/python/adapter_hashes.py), metadata edited without touching tensor bytes, and
//! malformed adapters refused in one line.

use crate::util::*;
use std::path::{Path, PathBuf};

fn adapter(name: &str) -> PathBuf {
    fixture("adapters").join(name)
}

fn layout(name: &str) -> PathBuf {
    fixture("layouts").join(name)
}

/// Every fixture and what it must read as: (file, kind, base, modules, typical rank).
const EXPECTED: &[(&str, &str, &str, usize, Option<u64>)] = &[
    ("sd1_kohya_lora.safetensors", "LoRA", "sd1", 48, Some(4)),
    ("sd1_kohya_lora.pt", "LoRA", "sd1-or-sd2", 48, Some(4)),
    ("sd1_locon.safetensors", "LoCon", "sd1", 60, Some(4)),
    (
        "sd1_peft_lora.safetensors",
        "LoRA",
        "sd1-or-sd2",
        11,
        Some(4),
    ),
    ("sd1_dora.safetensors", "DoRA", "sd1", 6, Some(4)),
    ("sd1_loha.safetensors", "LoHa", "sd1", 7, None),
    ("sd1_lokr.safetensors", "LoKr", "sd1", 8, None),
    ("sd1_full_diff.safetensors", "full", "sd1", 4, None),
    ("sd1_ia3.safetensors", "(IA)³", "sd1", 5, None),
    ("sd1_glora.safetensors", "GLoRA", "sd1", 5, None),
    ("sdxl_kohya_lora.safetensors", "LoCon", "sdxl", 53, Some(4)),
];

#[test]
fn every_adapter_fixture_reads_as_what_it_is() {
    for &(file, kind, base, modules, rank) in EXPECTED {
        let r = inspect_json(&adapter(file));
        let a = &r["adapter"];
        assert_eq!(a["kind"], kind, "{file}");
        assert_eq!(a["base"], base, "{file}: {}", a["base_evidence"]);
        assert_eq!(a["modules"].as_array().unwrap().len(), modules, "{file}");
        if let Some(rank) = rank {
            assert_eq!(a["rank"], rank, "{file}");
        }
        assert_eq!(r["architecture"], format!("adapter-{base}"), "{file}");
        assert!(a["other_tensors"].as_array().unwrap().is_empty(), "{file}");
        assert!(
            a["claims"].as_array().unwrap().is_empty(),
            "{file}: {}",
            a["claims"]
        );
    }
    // kohya's training metadata reads as a table and a ranked tag list.
    let r = inspect_json(&adapter("sd1_kohya_lora.safetensors"));
    let t = &r["adapter"]["training"];
    let tags = t["tags"].as_array().unwrap();
    assert_eq!(tags[0][0], "mychar", "{tags:?}");
    let counts: Vec<u64> = tags.iter().map(|t| t[1].as_u64().unwrap()).collect();
    assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");
    let settings: Vec<&str> = t["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1].as_str().unwrap())
        .collect();
    for key in [
        "ss_network_dim",
        "ss_learning_rate",
        "ss_optimizer",
        "ss_resolution",
    ] {
        assert!(settings.contains(&key), "{key} in {settings:?}");
    }
    assert_eq!(t["datasets"][0]["images"], 23);
    // The text summary draws modules per block and names the trigger tags.
    let out = ldmkit(&["inspect", s(&adapter("sdxl_kohya_lora.safetensors"))]);
    ok(&out, "inspect");
    let text = stdout(&out);
    for want in [
        "LoCon (kohya names) for Stable Diffusion XL",
        "TE2",
        "IN04",
        "█",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
}

/// Bake with ldmkit and with the reference, then compare (`ulp_share`: Tucker products,
/// whose sums torch.einsum orders its own way, may round one way or the other — by one unit
/// in the last place, or two once later adapters have rounded from there).
fn bake_matches(model: &str, config: &str, loras: &[&str], float32: bool, ulp_share: f64) {
    let Some(_) = python() else {
        eprintln!("skipped: LDMKIT_PYTHON is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ours, reference) = (
        dir.path().join("ours.safetensors"),
        dir.path().join("ref.safetensors"),
    );
    let (model, config) = (layout(model), layout(config));
    let paths: Vec<String> = loras
        .iter()
        .map(|l| {
            let (f, r) = l.split_once(':').unwrap_or((l, "1"));
            format!("{}:{r}", s(&adapter(f)))
        })
        .collect();
    if float32 {
        // cast f32 first, then each bake-lora, as the reference works in float32.
        let mut recipe = String::from("ldmkit-recipe 1\ninputs model");
        for i in 0..paths.len() {
            recipe += &format!(" l{i}");
        }
        recipe += "\nopen model\ncast f32\n";
        for (i, p) in paths.iter().enumerate() {
            recipe += &format!("bake-lora l{i} {}\n", p.rsplit_once(':').unwrap().1);
        }
        let file = dir.path().join("r.txt");
        std::fs::write(&file, recipe).unwrap();
        let mut args = vec!["apply", s(&file), s(&model)];
        let files: Vec<&str> = paths
            .iter()
            .map(|p| p.rsplit_once(':').unwrap().0)
            .collect();
        args.extend(files);
        args.extend(["-o", s(&ours)]);
        ok(&ldmkit(&args), "ldmkit apply (float32 bake)");
    } else {
        let mut args = vec!["bake-lora", s(&model)];
        args.extend(paths.iter().map(String::as_str));
        args.extend(["-o", s(&ours)]);
        ok(&ldmkit(&args), "ldmkit bake-lora");
    }
    let mut ref_args = Vec::new();
    if float32 {
        ref_args.extend(["--dtype", "float32", "--out-float32"]);
    }
    ref_args.extend([s(&model), s(&config), s(&reference)]);
    ref_args.extend(paths.iter().map(String::as_str));
    ok(&py("bake_ref.py", &ref_args).unwrap(), "bake_ref.py");
    let share = ulp_share.to_string();
    let max_ulp = if loras.len() > 1 { "2" } else { "1" };
    let cmp = py(
        "compare_close.py",
        &[
            s(&ours),
            s(&reference),
            "--ulp-share",
            &share,
            "--max-ulp",
            max_ulp,
        ],
    )
    .unwrap();
    ok(
        &cmp,
        &format!("ldmkit's bake of {loras:?} against the reference"),
    );
}

#[test]
fn kohya_peft_and_dora_bakes_equal_diffusers_fuse_lora_bit_for_bit() {
    for lora in [
        "sd1_kohya_lora.safetensors:0.7",
        "sd1_kohya_lora.pt:1.3",
        "sd1_locon.safetensors:0.7",
        "sd1_peft_lora.safetensors:-0.5",
        "sd1_dora.safetensors:0.7",
    ] {
        bake_matches(
            "sd1_tiny_ldm.safetensors",
            "sd1_config.json",
            &[lora],
            false,
            0.0,
        );
    }
    bake_matches(
        "sd1_tiny_ldm.safetensors",
        "sd1_config.json",
        &[
            "sd1_kohya_lora.safetensors:0.7",
            "sd1_peft_lora.safetensors:-0.3",
        ],
        false,
        0.0,
    );
    bake_matches(
        "sdxl_tiny_ldm.safetensors",
        "sdxl_config.json",
        &["sdxl_kohya_lora.safetensors:0.8"],
        false,
        0.0,
    );
}

#[test]
fn lycoris_bakes_equal_lycoris_definitions() {
    for lora in [
        "sd1_lokr.safetensors:0.7",
        "sd1_full_diff.safetensors:2",
        "sd1_ia3.safetensors:-1",
        "sd1_glora.safetensors:0.6",
    ] {
        bake_matches(
            "sd1_tiny_ldm.safetensors",
            "sd1_config.json",
            &[lora],
            false,
            0.0,
        );
    }
    // LoHa's Tucker cores: torch.einsum sums in its own order.
    bake_matches(
        "sd1_tiny_ldm.safetensors",
        "sd1_config.json",
        &["sd1_loha.safetensors:0.7"],
        false,
        2e-4,
    );
    bake_matches(
        "sd1_tiny_ldm.safetensors",
        "sd1_config.json",
        &[
            "sd1_locon.safetensors:0.7",
            "sd1_loha.safetensors:-0.3",
            "sd1_dora.safetensors:0.5",
            "sd1_lokr.safetensors:0.25",
            "sd1_ia3.safetensors:-1",
            "sd1_glora.safetensors:0.6",
            "sd1_full_diff.safetensors:2",
        ],
        false,
        2e-4,
    );
}

#[test]
fn float32_bakes_are_within_1e6_of_the_reference() {
    bake_matches(
        "sd1_tiny_ldm.safetensors",
        "sd1_config.json",
        &[
            "sd1_kohya_lora.safetensors:0.7",
            "sd1_loha.safetensors:-0.3",
            "sd1_dora.safetensors",
        ],
        true,
        0.0,
    );
    bake_matches(
        "sdxl_tiny_ldm.safetensors",
        "sdxl_config.json",
        &["sdxl_kohya_lora.safetensors:0.8"],
        true,
        0.0,
    );
}

#[test]
fn a_baked_file_loads_in_diffusers_single_file_converters() {
    if python().is_none() {
        eprintln!("skipped: LDMKIT_PYTHON is not set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("baked.safetensors");
    ok(
        &ldmkit(&[
            "bake-lora",
            s(&layout("sdxl_tiny_ldm.safetensors")),
            s(&adapter("sdxl_kohya_lora.safetensors")),
            "-o",
            s(&out),
        ]),
        "bake",
    );
    let folder = dir.path().join("diffusers");
    let config = layout("sdxl_config.json");
    ok(
        &py(
            "diffusers_ref.py",
            &[s(&out), s(&folder), "--config", s(&config)],
        )
        .unwrap(),
        "diffusers' single-file conversion of the baked file",
    );
    let load = py("load_diffusers.py", &[s(&folder), "--config", s(&config)]).unwrap();
    ok(&load, "loading the converted folder");
}

#[test]
fn bake_recipes_replay_byte_for_byte_and_block_weights_pick_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let model = layout("sd1_tiny_ldm.safetensors");
    let lora = adapter("sd1_kohya_lora.safetensors");
    let a = dir.path().join("a.safetensors");
    let spec = format!("{}:0.8:OUTS", s(&lora));
    ok(
        &ldmkit(&["bake-lora", s(&model), &spec, "-o", s(&a)]),
        "bake",
    );
    let printed = ldmkit(&["bake-lora", s(&model), &spec, "-o", s(&a), "--print-recipe"]);
    let text = stdout(&printed);
    assert!(text.contains("bake-lora lora1 0.8 blocks=OUTS"), "{text}");
    let link = text
        .lines()
        .find_map(|l| l.strip_prefix("# link: "))
        .unwrap()
        .to_string();
    let b = dir.path().join("b.safetensors");
    ok(
        &ldmkit(&["apply", &link, s(&model), s(&lora), "-o", s(&b)]),
        "apply link",
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // OUTS (LBW): text encoder and output blocks 6-11 baked, inputs and the middle not.
    let base = inspect_values(&model);
    let baked = inspect_values(&a);
    let changed = |key: &str| base[key] != baked[key];
    assert!(changed(
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
    ));
    assert!(changed(
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight"
    ));
    assert!(!changed(
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    ));
    assert!(!changed(
        "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_q.weight"
    ));

    // A list of the wrong length is refused in one line.
    let bad = ldmkit(&[
        "bake-lora",
        s(&model),
        &format!("{}:1:1,2,3", s(&lora)),
        "-o",
        s(&b),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("26"), "{}", stderr(&bad));

    // Block-weighted merges: IN blocks from B, the rest from A.
    let other = dir.path().join("other.safetensors");
    ok(
        &ldmkit(&["bake-lora", s(&model), s(&lora), "-o", s(&other)]),
        "bake",
    );
    let mut w = vec!["0"; 26];
    for v in w.iter_mut().take(13).skip(1) {
        *v = "1";
    }
    let merged = dir.path().join("m.safetensors");
    ok(
        &ldmkit(&[
            "weighted-sum",
            s(&model),
            s(&other),
            "--alpha",
            "0",
            "--blocks",
            &w.join(","),
            "-o",
            s(&merged),
        ]),
        "block-weighted sum",
    );
    let (m, o) = (inspect_values(&merged), inspect_values(&other));
    let k_in = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight";
    let k_out = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn1.to_q.weight";
    assert_eq!(m[k_in], o[k_in]);
    assert_eq!(m[k_out], base[k_out]);
}

/// Tensor name → its raw bytes, read from a safetensors file.
fn inspect_values(path: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let data = &bytes[8 + n..];
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = &v["data_offsets"];
            let (a, b) = (
                o[0].as_u64().unwrap() as usize,
                o[1].as_u64().unwrap() as usize,
            );
            (k.clone(), data[a..b].to_vec())
        })
        .collect()
}

#[test]
fn hashes_equal_a1111_and_kohya_definitions() {
    let files = [
        adapter("sd1_kohya_lora.safetensors"),
        adapter("sd1_kohya_lora.pt"),
        // Past 1 MiB, so A1111's legacy window holds bytes.
        layout("sd1_tiny_ldm.safetensors"),
    ];
    let mut args = vec!["hash", "--json"];
    args.extend(files.iter().map(|f| s(f)));
    let out = ldmkit(&args);
    ok(&out, "hash");
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // kohya's sshs_model_hash in the fixture's metadata is the tensor-bytes hash.
    assert_eq!(ours[0]["autov3"], ours[0]["sshs_model_hash"]);
    assert!(ours[1]["autov3"].is_null());
    let Some(reference) = py(
        "adapter_hashes.py",
        &files.iter().map(|f| s(f)).collect::<Vec<_>>(),
    ) else {
        eprintln!("skipped: LDMKIT_PYTHON is not set");
        return;
    };
    ok(&reference, "adapter_hashes.py");
    for (i, line) in stdout(&reference).lines().enumerate() {
        let want: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["sha256", "autov2", "autov3", "legacy"] {
            assert_eq!(ours[i][key], want[key], "{key} of {}", files[i].display());
        }
    }
}

#[test]
fn meta_edits_the_header_and_keeps_autov3() {
    let dir = tempfile::tempdir().unwrap();
    let lora = adapter("sd1_kohya_lora.safetensors");
    let out = dir.path().join("edited.safetensors");
    let r = ldmkit(&[
        "meta",
        s(&lora),
        "--title",
        "My character",
        "--trigger",
        "mychar, 1girl",
        "--set",
        "modelspec.author=someone",
        "--delete",
        "ss_seed",
        "-o",
        s(&out),
    ]);
    ok(&r, "meta");
    assert!(
        stderr(&r).contains("AutoV3 / sshs_model_hash does not"),
        "{}",
        stderr(&r)
    );
    let json = |p: &Path| -> serde_json::Value {
        let o = ldmkit(&["meta", s(p), "--json"]);
        ok(&o, "meta --json");
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let m = json(&out);
    assert_eq!(m["modelspec.title"], "My character");
    assert_eq!(m["modelspec.trigger_phrase"], "mychar, 1girl");
    assert_eq!(m["modelspec.author"], "someone");
    assert!(m.get("ss_seed").is_none());
    assert_eq!(m["ss_network_dim"], json(&lora)["ss_network_dim"]);
    let h = ldmkit(&["hash", "--json", s(&lora), s(&out)]);
    let h: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(h[0]["autov3"], h[1]["autov3"]);
    assert_ne!(h[0]["autov2"], h[1]["autov2"]);
    assert_eq!(inspect_values(&lora), inspect_values(&out));
    if let Some(load) = py("compare.py", &[s(&lora), s(&out)]) {
        ok(
            &load,
            "safetensors loads the edited file with the same tensors",
        );
    }
    // A torch file has no metadata to edit; an edit without -o changes nothing.
    let pt = ldmkit(&[
        "meta",
        s(&adapter("sd1_kohya_lora.pt")),
        "--title",
        "x",
        "-o",
        s(&out),
    ]);
    assert_eq!(pt.status.code(), Some(2));
    let no_out = ldmkit(&["meta", s(&lora), "--title", "x"]);
    assert_eq!(no_out.status.code(), Some(2));
}

/// One tensor of a hand-made file: name, shape, values (zeros when `None`).
type Spec<'a> = (&'a str, &'a [u64], Option<&'a [f32]>);

/// A safetensors file of F16 zeros (or the given values) with these shapes.
fn write_st(path: &Path, tensors: &[Spec], metadata: &str) {
    let mut header = format!("{{\"__metadata__\":{metadata}");
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let n: u64 = shape.iter().product();
        let start = data.len();
        match values {
            Some(v) => v
                .iter()
                .for_each(|x| data.extend(half::f16::from_f32(*x).to_le_bytes())),
            None => data.resize(start + 2 * n as usize, 0),
        }
        header += &format!(
            ",\"{name}\":{{\"dtype\":\"F16\",\"shape\":{shape:?},\"data_offsets\":[{start},{}]}}",
            data.len()
        );
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn malformed_adapters_get_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let (down, up, alpha) = (
        format!("{m}.lora_down.weight"),
        format!("{m}.lora_up.weight"),
        format!("{m}.alpha"),
    );
    let nan = [f32::NAN];
    let cases: Vec<(&str, Vec<Spec>, &str)> = vec![
        (
            "rank",
            vec![(&down, &[4, 32], None), (&up, &[32, 8], None)],
            "shapes do not fit",
        ),
        ("half", vec![(&down, &[4, 32], None)], "has no up"),
        (
            "nan",
            vec![
                (&down, &[4, 32], None),
                (&up, &[32, 4], None),
                (&alpha, &[], Some(&nan)),
            ],
            "alpha is NaN",
        ),
        (
            "zero",
            vec![(&down, &[0, 32], None), (&up, &[32, 0], None)],
            "rank 0",
        ),
        (
            "oft",
            vec![("lora_unet_x.oft_blocks", &[2, 4, 4], None)],
            "OFT",
        ),
    ];
    for (name, tensors, want) in cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        write_st(&path, &tensors, "{}");
        let out = ldmkit(&["inspect", s(&path)]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(
            err.contains(want) && err.contains(s(&path)),
            "{name}: {err}"
        );
        let baked = dir.path().join("x.safetensors");
        let bake = ldmkit(&[
            "bake-lora",
            s(&layout("sd1_tiny_ldm.safetensors")),
            s(&path),
            "-o",
            s(&baked),
        ]);
        assert_eq!(bake.status.code(), Some(2), "{name}");
        assert!(!baked.exists(), "{name}: nothing half-written");
    }
    // Huge metadata (10 MB of tags) reads, bounded by the format's 100 MB header cap.
    let tags: serde_json::Map<String, serde_json::Value> =
        (0..400_000).map(|i| (format!("t{i}"), 1.into())).collect();
    let freq = serde_json::json!({ "d": tags }).to_string();
    let meta = serde_json::json!({ "ss_tag_frequency": freq }).to_string();
    let big = dir.path().join("big.safetensors");
    write_st(
        &big,
        &[(&down, &[4, 32], None), (&up, &[32, 4], None)],
        &meta,
    );
    let out = ldmkit(&["inspect", "--json", s(&big)]);
    ok(&out, "inspect of huge metadata");

    // A LoRA for another base is refused, naming the first module that does not fit.
    let baked = dir.path().join("y.safetensors");
    let out = ldmkit(&[
        "bake-lora",
        s(&layout("sd1_tiny_ldm.safetensors")),
        s(&adapter("sdxl_kohya_lora.safetensors")),
        "-o",
        s(&baked),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("does not fit this model: module 'lora_"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!baked.exists());
    // A checkpoint is not an adapter.
    let out = ldmkit(&[
        "bake-lora",
        s(&layout("sd1_tiny_ldm.safetensors")),
        s(&layout("sd2_tiny_ldm.safetensors")),
        "-o",
        s(&baked),
    ]);
    assert!(
        stderr(&out).contains("is not a LoRA or LyCORIS adapter"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_diffusers_folder_takes_the_same_bake_as_its_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = layout("sdxl_tiny_ldm.safetensors");
    let lora = format!("{}:0.9", s(&adapter("sdxl_kohya_lora.safetensors")));
    let folder = dir.path().join("model");
    ok(
        &ldmkit(&[
            "convert",
            s(&model),
            "--layout",
            "diffusers",
            "-o",
            s(&folder),
        ]),
        "convert",
    );
    // Baked as one LDM file, then converted; and baked into the folder itself.
    let baked = dir.path().join("baked.safetensors");
    ok(
        &ldmkit(&["bake-lora", s(&model), &lora, "-o", s(&baked)]),
        "bake file",
    );
    let via_file = dir.path().join("via_file");
    ok(
        &ldmkit(&[
            "convert",
            s(&baked),
            "--layout",
            "diffusers",
            "-o",
            s(&via_file),
        ]),
        "convert baked",
    );
    let via_folder = dir.path().join("via_folder");
    ok(
        &ldmkit(&["bake-lora", s(&folder), &lora, "-o", s(&via_folder)]),
        "bake folder",
    );
    for part in ["unet", "text_encoder", "text_encoder_2"] {
        let find = |root: &Path| {
            std::fs::read_dir(root.join(part))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .unwrap()
        };
        assert_eq!(
            inspect_values(&find(&via_file)),
            inspect_values(&find(&via_folder)),
            "{part}"
        );
    }
}
