//! Rewrites checked against the reference libraries.

use crate::util::{checkpoints_in, fixture, ldmkit, ok, py, python, s, stderr, stdout};
use std::path::{Path, PathBuf};

/// Run `ldmkit ARGS -o OUT`, asserting success.
fn rewrite(args: &[&str], out: &Path) {
    let mut all = args.to_vec();
    all.extend(["-o", s(out)]);
    ok(&ldmkit(&all), &format!("ldmkit {}", all.join(" ")));
}

/// `ldmkit ARGS -o NAME` equals `seed.py ARGS NAME` (the seed's Python method), with our
/// file loaded by compare.py under `load` flags (weights-only, mmap, whole tree).
fn equals_seed(dir: &Path, name: &str, args: &[&str], load: &[&str]) {
    let mine = dir.join(name);
    rewrite(args, &mine);
    if python().is_none() {
        return;
    }
    let reference = dir.join(format!("seed-{name}"));
    let mut seed = args.to_vec();
    seed.push(s(&reference));
    ok(
        &py("seed.py", &seed).unwrap(),
        &format!("seed.py {}", seed.join(" ")),
    );
    let mut cmp = vec![s(&mine), s(&reference)];
    cmp.extend(load);
    ok(
        &py("compare.py", &cmp).unwrap(),
        &format!("compare.py {}", cmp.join(" ")),
    );
}

#[test]
fn view_flags_give_torch_values() {
    // torch saves `_neg_view(x)` and a conjugated complex tensor as the plain bytes plus a
    // flag; rewrites keep the values torch reads (the flag in a .ckpt, the values computed in
    // a .safetensors, which holds no flags).
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("fidelity_neg_view.ckpt", "out.ckpt"),
        ("fidelity_neg_view.ckpt", "out.safetensors"),
        ("fidelity_conj.ckpt", "conj.ckpt"),
    ];
    for (input, output) in cases {
        let (input, out) = (
            fixture(&format!("hostile/{input}")),
            dir.path().join(output),
        );
        rewrite(&["strip", s(&input)], &out);
        if python().is_some() {
            let cmp = [s(&input), s(&out), "--weights-only"];
            ok(
                &py("compare.py", &cmp).unwrap(),
                &format!("compare.py {cmp:?}"),
            );
        }
    }
}

#[test]
fn strip_merge_graft_equal_the_seed_method() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let training = fixture("sd1_training.ckpt");
    let release = fixture("sd1_release.ckpt");
    let release_st = fixture("sd1_release.safetensors");
    let (t, r, rs) = (s(&training), s(&release), s(&release_st));
    let torch_strict = ["--weights-only", "--mmap", "--tree"];
    let fp16 = fixture("release_fp16.ckpt");
    let f16 = s(&fp16);
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("strip.ckpt", &["strip", t], &torch_strict),
        ("strip-ema.ckpt", &["strip", t, "--ema"], &torch_strict),
        (
            "strip-f16.safetensors",
            &["strip", t, "--dtype", "f16"],
            &[],
        ),
        (
            "strip-ema-bf16.ckpt",
            &["strip", t, "--ema", "--dtype", "bf16"],
            &torch_strict,
        ),
        ("merge.ckpt", &["merge", t, r], &torch_strict),
        ("merge-st.ckpt", &["merge", t, rs], &torch_strict),
        (
            "merge-ema-f16.safetensors",
            &["merge", t, r, "--ema", "--dtype", "f16"],
            &[],
        ),
        (
            "merge-keep-ema.ckpt",
            &["merge", t, r, "--keep-ema"],
            &torch_strict,
        ),
        (
            "merge-f32.ckpt",
            &["merge", f16, r, "--dtype", "f32"],
            &torch_strict,
        ),
        // A graft keeps OmegaConf hyper-parameters, which the weights-only loader refuses.
        ("graft.ckpt", &["graft", r, t], &["--tree", "--mmap"]),
    ];
    for (name, args, load) in cases {
        equals_seed(d, name, args, load);
    }
}

#[test]
fn arithmetic_merges_equal_a1111_formulas() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let release = fixture("sd1_release.ckpt");
    let fp16 = fixture("release_fp16.ckpt");
    // A second model that differs from the release: the training run's EMA weights.
    let ema = d.join("ema.safetensors");
    rewrite(&["strip", s(&fixture("sd1_training.ckpt")), "--ema"], &ema);
    let (r, e, h) = (s(&release), s(&ema), s(&fp16));
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "ws.safetensors",
            &["weighted-sum", r, e, "--alpha", "0.3"],
            &[],
        ),
        (
            "ws-f16.ckpt",
            &["weighted-sum", r, e, "--alpha", "0.75", "--dtype", "f16"],
            &["--weights-only", "--mmap"],
        ),
        (
            "ws-half.safetensors",
            &["weighted-sum", h, e, "--alpha", "0.5"],
            &[],
        ),
        (
            "ad.safetensors",
            &["add-difference", r, e, h, "--alpha", "0.5"],
            &[],
        ),
    ];
    for (name, args, load) in cases {
        equals_seed(d, name, args, load);
    }
}

#[test]
fn grafted_checkpoint_resumes_in_lightning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let training = fixture("sd1_training.ckpt");
    // A base whose weights differ from the training run's, so the graft is visible.
    let ema_base = d.join("ema-base.safetensors");
    rewrite(&["strip", s(&training), "--ema"], &ema_base);
    let grafted = d.join("grafted.ckpt");
    rewrite(&["graft", s(&ema_base), s(&training)], &grafted);
    let inspected = ldmkit(&["inspect", "--json", s(&grafted)]);
    ok(&inspected, "inspect grafted");
    let Some(out) = py(
        "resume_lightning.py",
        &[s(&grafted), "--expect-weights", s(&ema_base)],
    ) else {
        return;
    };
    ok(&out, "resume_lightning.py");
    assert!(stdout(&out).contains("resumed: step"), "{}", stdout(&out));
}

/// The keys a conversion round trip may lose: what the diffusers layout has no place for.
fn may_be_lost(key: &str) -> bool {
    ldmkit_core::model::components::SCHEDULE_BUFFERS.contains(&key)
        || key == "cond_stage_model.model.logit_scale"
        || key == "cond_stage_model.model.text_projection"
        || key.starts_with("cond_stage_model.model.transformer.resblocks.2.")
        || key == "conditioner.embedders.1.model.logit_scale"
}

#[test]
fn convert_agrees_with_diffusers_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for v in ["sd1", "sd2", "sdxl"] {
        let ldm = fixture(&format!("layouts/{v}_tiny_ldm.safetensors"));
        let config = fixture(&format!("layouts/{v}_config.json"));
        let folder = d.join(format!("{v}-diffusers"));
        rewrite(&["convert", s(&ldm), "--layout", "diffusers"], &folder);
        for file in [
            "unet/config.json",
            "vae/config.json",
            "text_encoder/config.json",
            "model_index.json",
        ] {
            assert!(folder.join(file).is_file(), "{v}: no {file}");
        }
        let back = d.join(format!("{v}-back.ckpt"));
        rewrite(&["convert", s(&folder), "--layout", "ldm"], &back);
        if python().is_none() {
            continue;
        }
        let reference = d.join(format!("{v}-reference"));
        ok(
            &py(
                "diffusers_ref.py",
                &[s(&ldm), s(&reference), "--config", s(&config)],
            )
            .unwrap(),
            "diffusers_ref.py",
        );
        for part in [
            "unet/diffusion_pytorch_model",
            "vae/diffusion_pytorch_model",
            "text_encoder/model",
        ] {
            let ours = folder.join(format!("{part}.safetensors"));
            let theirs = reference.join(format!("{part}.safetensors"));
            ok(
                &py("compare.py", &[s(&ours), s(&theirs)]).unwrap(),
                &format!("{v} {part}"),
            );
        }
        ok(
            &py("load_diffusers.py", &[s(&folder), "--config", s(&config)]).unwrap(),
            "load_diffusers.py",
        );
        // Back in the original layout: every tensor as it was, minus what diffusers drops.
        let cmp = py(
            "compare.py",
            &[s(&back), s(&ldm), "--weights-only", "--mmap"],
        )
        .unwrap();
        for line in stdout(&cmp).lines() {
            let lost = line.strip_suffix(": only in B").is_some_and(may_be_lost);
            assert!(lost, "{v}: round trip: {line}");
        }
    }
}

/// Every file under `root`, relative, with its bytes.
fn tree_bytes(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    if root.is_file() {
        return vec![(PathBuf::new(), std::fs::read(root).unwrap())];
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn apply_equals_every_shortcut_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let training = fixture("sd1_training.ckpt");
    let release = fixture("sd1_release.ckpt");
    let vae_only = fixture("sd1_release.safetensors");
    let layout = fixture("layouts/sd1_tiny_ldm.safetensors");
    let (t, r, v, l) = (s(&training), s(&release), s(&vae_only), s(&layout));
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "strip.safetensors",
            &["strip", "--ema", "--dtype", "f16"],
            &[t],
        ),
        ("merge.ckpt", &["merge", "--dtype", "bf16"], &[t, r]),
        ("graft.ckpt", &["graft"], &[r, t]),
        (
            "ws.safetensors",
            &["weighted-sum", "--alpha", "0.4"],
            &[r, t],
        ),
        ("ad.ckpt", &["add-difference", "--alpha", "1.0"], &[r, t, r]),
        ("baked.ckpt", &["bake-vae"], &[r, v]),
        (
            "diffusers",
            &["convert", "--layout", "diffusers", "--dtype", "f16"],
            &[l],
        ),
    ];
    for (name, command, inputs) in cases {
        let shortcut = d.join(format!("shortcut-{name}"));
        let mut args: Vec<&str> = vec![command[0]];
        args.extend(inputs.iter());
        args.extend(&command[1..]);
        rewrite(&args, &shortcut);
        let mut print = args.clone();
        print.push("--print-recipe");
        let printed = ldmkit(&print);
        ok(&printed, "--print-recipe");
        let text = stdout(&printed);
        let recipe_file = d.join(format!("{name}.recipe"));
        std::fs::write(&recipe_file, &text).unwrap();
        let link = text
            .lines()
            .find_map(|l| l.strip_prefix("# link: "))
            .expect("link printed")
            .to_string();
        for (i, recipe) in [s(&recipe_file), link.as_str()].into_iter().enumerate() {
            let applied = d.join(format!("applied{i}-{name}"));
            let mut apply = vec!["apply", recipe];
            apply.extend(inputs.iter());
            rewrite(&apply, &applied);
            assert!(
                tree_bytes(&applied) == tree_bytes(&shortcut),
                "{name}: apply {recipe} differs from the shortcut"
            );
        }
    }
}

#[test]
fn rewrites_refuse_bad_requests_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let copy = d.join("model.ckpt");
    std::fs::copy(fixture("sd1_release.ckpt"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "strip".into(),
                s(&copy).into(),
                "-o".into(),
                s(&copy).into(),
            ],
            "refusing to overwrite the input",
        ),
        (
            vec![
                "strip".into(),
                s(&copy).into(),
                "-o".into(),
                s(&d.join("x.onnx")).into(),
            ],
            "unknown output type",
        ),
        (
            vec![
                "strip".into(),
                s(&copy).into(),
                "--ema".into(),
                "-o".into(),
                s(&d.join("e.ckpt")).into(),
            ],
            "has no EMA weights",
        ),
        (
            vec![
                "strip".into(),
                s(&copy).into(),
                "--dtype".into(),
                "f8".into(),
                "-o".into(),
                s(&d.join("f.ckpt")).into(),
            ],
            "--dtype takes",
        ),
        (
            vec![
                "merge".into(),
                s(&copy).into(),
                s(&fixture("hostile/MANIFEST.json")).into(),
                "-o".into(),
                s(&d.join("m.ckpt")).into(),
            ],
            "MANIFEST.json",
        ),
        (
            vec![
                "merge".into(),
                s(&fixture("sd1_training.ckpt")).into(),
                s(&fixture("sd2_like.safetensors")).into(),
                "-o".into(),
                s(&d.join("m2.ckpt")).into(),
            ],
            "the base is another model",
        ),
        (
            vec![
                "graft".into(),
                s(&fixture("sdxl_like.safetensors")).into(),
                s(&fixture("sd1_training.ckpt")).into(),
                "-o".into(),
                s(&d.join("g.ckpt")).into(),
            ],
            "differ in shape or dtype",
        ),
        (
            vec![
                "convert".into(),
                s(&fixture("shared_views.pt")).into(),
                "--layout".into(),
                "diffusers".into(),
                "-o".into(),
                s(&d.join("dd")).into(),
            ],
            "no place in the target layout",
        ),
    ];
    // Merge weights: finite, and a weighted sum's within [0, 1]; flags, recipes and links.
    let (a, b) = (s(&copy), s(&fixture("sd1_release.safetensors")).to_string());
    let ws = |alpha: &'static str| vec!["weighted-sum", a, &b, alpha];
    let ad = |alpha: &'static str| vec!["add-difference", a, &b, a, "--alpha", alpha];
    let link_ws = "#recipe=1;inputs,a,b;open,a;weighted-sum,b,nan";
    let link_ad = "#recipe=1;inputs,a,b,c;open,a;add-difference,b,c,-1e400";
    let mut cases = cases;
    for (args, expected) in [
        (ws("--alpha=nan"), "error: --alpha must be a finite number, not nan"),
        (
            ws("--alpha=1.5"),
            "must be between 0 and 1, not 1.5 (to extrapolate: ldmkit add-difference A B A --alpha 1.5)",
        ),
        (ad("inf"), "error: --alpha must be a finite number, not inf"),
        (ad("1e39"), "(it is computed in float32), not 1e+39"),
        (
            vec!["apply", link_ws, a, &b],
            "recipe: weighted-sum alpha must be a finite number, not 'nan'",
        ),
        (vec!["apply", link_ad, a, &b, a], "not '-1e400'"),
    ] {
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.extend(["-o".to_string(), s(&d.join("w.ckpt")).to_string()]);
        cases.push((args, expected));
    }
    // Refused before anything is printed, even the recipe.
    cases.push((
        ["weighted-sum", a, &b, "--alpha=-inf", "--print-recipe"]
            .map(String::from)
            .to_vec(),
        "error: --alpha must be a finite number, not -inf",
    ));
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = ldmkit(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(&copy).unwrap(), before, "input changed");
    let left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("model.ckpt")],
        "left behind: {left:?}"
    );
}

#[test]
fn hostile_inputs_are_refused_cleanly() {
    // Every hostile file through strip (both formats), merge and graft: a one-line refusal
    // with nothing written, or an output — and a .ckpt output loads with
    // torch.load(weights_only=True) (checked by `ldmkit()` itself), with no payload run.
    let dir = tempfile::tempdir().unwrap();
    let release = fixture("sd1_release.ckpt");
    for file in checkpoints_in(&fixture("hostile")) {
        let f = s(&file);
        let outs = [
            dir.path().join("out.safetensors"),
            dir.path().join("out.ckpt"),
            dir.path().join("merged.ckpt"),
            dir.path().join("grafted.ckpt"),
        ];
        let runs: [Vec<&str>; 4] = [
            vec!["strip", f, "-o", s(&outs[0])],
            vec!["strip", f, "-o", s(&outs[1])],
            vec!["merge", f, s(&release), "-o", s(&outs[2])],
            vec!["graft", s(&release), f, "--force", "-o", s(&outs[3])],
        ];
        for (args, out) in runs.iter().zip(&outs) {
            let _ = std::fs::remove_file(out);
            let run = ldmkit(args);
            let code = run.status.code();
            assert!(
                code == Some(0) || code == Some(2),
                "{args:?}: exit {code:?}: {}",
                stderr(&run)
            );
            if code == Some(2) {
                let err = stderr(&run);
                assert!(
                    err.starts_with("error: ") && err.lines().count() == 1,
                    "{args:?}: {err}"
                );
                assert!(!out.exists(), "{args:?}: output written on error");
            }
        }
        let stray: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(stray.is_empty(), "{}: left {stray:?}", file.display());
    }
    let pwned: Vec<_> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ldmkit-pwned"))
        .collect();
    assert!(pwned.is_empty(), "a payload ran: {pwned:?}");
}

#[test]
fn payloads_are_reported_and_never_copied() {
    let dir = tempfile::tempdir().unwrap();
    let payload = fixture("hostile/zip_payload.ckpt");
    // Strip keeps only the tensors: written, with the payload named in a warning.
    let stripped = dir.path().join("stripped.safetensors");
    let o = ldmkit(&["strip", s(&payload), "-o", s(&stripped)]);
    ok(&o, "strip of a file with a payload");
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: ") && l.contains("posix.system")),
        "{err}"
    );
    let scan = ldmkit(&["scan", s(&stripped)]);
    assert_eq!(scan.status.code(), Some(0), "{}", stdout(&scan));
    // A release .ckpt keeps tensors and allowlisted containers only: the payload entry is
    // dropped with one warning naming its key and class, and the file scans clean.
    let torch_stripped = dir.path().join("stripped.ckpt");
    let o = ldmkit(&["strip", s(&payload), "-o", s(&torch_stripped)]);
    ok(&o, "strip of a file with a payload to .ckpt");
    let err = stderr(&o);
    assert!(
        err.lines()
            .any(|l| l.starts_with("warning: dropped state-dict entry")
                && l.contains("posix.system")),
        "{err}"
    );
    let scan = ldmkit(&["scan", s(&torch_stripped)]);
    assert_eq!(scan.status.code(), Some(0), "{}", stdout(&scan));
    // --keep-foreign never keeps a global known to run code.
    let kept = dir.path().join("kept.ckpt");
    let o = ldmkit(&["strip", s(&payload), "--keep-foreign", "-o", s(&kept)]);
    ok(&o, "strip --keep-foreign");
    let scan = ldmkit(&["scan", s(&kept)]);
    assert_eq!(scan.status.code(), Some(0), "{}", stdout(&scan));
    // A harmless foreign class: dropped by default, kept with --keep-foreign, and then
    // the summary says the file is not weights-only loadable.
    let foreign = fixture("hostile/foreign_namespace.ckpt");
    let dropped = dir.path().join("dropped.ckpt");
    let o = ldmkit(&["strip", s(&foreign), "-o", s(&dropped)]);
    ok(&o, "strip of a foreign entry");
    let err = stderr(&o);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("warning: dropped"))
        .collect();
    assert!(
        warnings.len() == 1
            && warnings[0].contains("'args'")
            && warnings[0].contains("argparse.Namespace"),
        "{err}"
    );
    let kept = dir.path().join("foreign_kept.ckpt");
    let o = ldmkit(&["strip", s(&foreign), "--keep-foreign", "-o", s(&kept)]);
    ok(&o, "strip --keep-foreign of a foreign entry");
    assert!(
        stderr(&o).contains("NOT loadable with torch.load(weights_only=True)"),
        "{}",
        stderr(&o)
    );
    assert_eq!(ldmkit(&["scan", s(&kept)]).status.code(), Some(1));
    // A graft into a bare state dict writes a release: the payload entry is dropped.
    let release = fixture("sd1_release.ckpt");
    let grafted = dir.path().join("grafted.ckpt");
    let o = ldmkit(&["graft", s(&release), s(&payload), "-o", s(&grafted)]);
    ok(&o, "graft into a bare state dict with a payload");
    assert!(
        stderr(&o).contains("warning: dropped state-dict entry '__pwn__'"),
        "{}",
        stderr(&o)
    );
    assert_eq!(ldmkit(&["scan", s(&grafted)]).status.code(), Some(0));
    // A graft keeps the training file's tree: one that holds a payload is refused.
    let nested = fixture("hostile/zip_nested_state_dict.ckpt");
    let grafted = dir.path().join("grafted-tree.ckpt");
    let o = ldmkit(&[
        "graft",
        s(&release),
        s(&nested),
        "--force",
        "-o",
        s(&grafted),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "graft: {err}");
    assert!(
        err.trim().lines().count() == 1 && err.contains("_load_from_bytes") && !grafted.exists(),
        "graft: {err}"
    );
}

/// `diff --json` of two checkpoints.
fn diff_json(a: &Path, b: &Path) -> serde_json::Value {
    let out = ldmkit(&["diff", "--json", s(a), s(b)]);
    ok(&out, "diff");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_same_tensors(a: &Path, b: &Path) {
    let d = diff_json(a, b);
    let n = d["tensors"].as_array().unwrap().len();
    assert!(n > 0, "{d}");
    assert_eq!(
        d["identical"].as_u64().unwrap() as usize,
        n,
        "{}: {d}",
        a.display()
    );
    assert!(d["only_in_a"].as_array().unwrap().is_empty(), "{d}");
    assert!(d["only_in_b"].as_array().unwrap().is_empty(), "{d}");
    assert!(d["mismatched"].as_array().unwrap().is_empty(), "{d}");
}

#[test]
fn components_swap_in_from_any_naming() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = fixture("layouts/sd1_tiny_ldm.safetensors");
    let folder = d.join("diffusers");
    rewrite(&["convert", s(&model), "--layout", "diffusers"], &folder);
    // Baking the model's own VAE back in, from a diffusers VAE file, from the diffusers
    // folder, and from the model itself, gives the model back.
    let vae_file = folder.join("vae/diffusion_pytorch_model.safetensors");
    for (i, source) in [vae_file.as_path(), folder.as_path(), model.as_path()]
        .into_iter()
        .enumerate()
    {
        let out = d.join(format!("baked{i}.safetensors"));
        rewrite(&["bake-vae", s(&model), s(source)], &out);
        assert_same_tensors(&out, &model);
    }
    // Converting a converted SD 2.x model again loses nothing more.
    let sd2 = fixture("layouts/sd2_tiny_ldm.safetensors");
    let (once, back, twice) = (d.join("once"), d.join("back.safetensors"), d.join("twice"));
    rewrite(&["convert", s(&sd2), "--layout", "diffusers"], &once);
    rewrite(&["convert", s(&once), "--layout", "ldm"], &back);
    rewrite(&["convert", s(&back), "--layout", "diffusers"], &twice);
    assert_same_tensors(&once, &twice);
}

#[test]
fn merges_take_no_ema_from_the_other_model() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ws.safetensors");
    rewrite(
        &[
            "weighted-sum",
            s(&fixture("sd1_release.ckpt")),
            s(&fixture("sd1_training.ckpt")),
            "--alpha",
            "0.5",
        ],
        &out,
    );
    let report = crate::util::inspect_json(&out);
    let ema = report["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"].as_str().unwrap().starts_with("model_ema."))
        .count();
    assert_eq!(ema, 0);
}
