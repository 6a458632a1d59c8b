//! `ldmkit pre-encode`, `tokenize` and `sample` end to end on the tiny SD 1.x fixture (made by
//! real diffusers/transformers) and generated datasets in all three layouts, checked against
//! diffusers / transformers by tests/python/encode_ref.py when LDMKIT_PYTHON is set.

use crate::util::{fixture, ldmkit, ok, py, s, stderr, stdout};
use image::{Rgb, RgbImage};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

const RES: &str = "64";

pub(crate) fn model() -> PathBuf {
    fixture("layouts/sd1_tiny_ldm.safetensors")
}

pub(crate) fn tokenizer() -> PathBuf {
    fixture("tokenizer")
}

/// A deterministic, textured image (so latents differ between images).
fn picture(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = |k: u32| {
            ((x * (3 + k + seed) + y * (5 + 2 * k) + seed * 17 + (x * y) % (7 + k)) % 256) as u8
        };
        Rgb([v(0), v(1), v(2)])
    })
}

pub(crate) fn png(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    picture(w, h, seed)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    picture(w, h, seed)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

const CORRUPT: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR garbage";

/// kohya folder: 4 good images (one JPEG, one needing a resize, one in a repeat subfolder
/// with a `.caption`, one without a caption) and a corrupt one.
fn kohya(dir: &Path) -> PathBuf {
    let root = dir.join("kohya");
    fs::create_dir_all(root.join("10_cat")).unwrap();
    fs::write(root.join("a.png"), png(64, 64, 1)).unwrap();
    fs::write(root.join("a.txt"), "a photo of a cat, high quality").unwrap();
    fs::write(root.join("b.jpg"), jpeg(64, 64, 2)).unwrap();
    fs::write(
        root.join("b.txt"),
        "a painting of a dog in the style of van gogh",
    )
    .unwrap();
    fs::write(root.join("wide.png"), png(96, 64, 3)).unwrap();
    fs::write(root.join("wide.txt"), "a landscape with mountains").unwrap();
    fs::write(root.join("10_cat/c.png"), png(64, 64, 4)).unwrap();
    fs::write(
        root.join("10_cat/c.caption"),
        "the cat's toy, close-up photo",
    )
    .unwrap();
    fs::write(root.join("nocap.png"), png(64, 64, 5)).unwrap();
    fs::write(root.join("broken.png"), CORRUPT).unwrap();
    fs::write(root.join("broken.txt"), "never encoded").unwrap();
    root
}

/// metadata.jsonl folder: 2 good rows, a row that is not JSON, a row whose file is missing.
fn hf(dir: &Path) -> PathBuf {
    let root = dir.join("hf");
    fs::create_dir_all(root.join("train")).unwrap();
    fs::write(root.join("train/0.png"), png(64, 64, 6)).unwrap();
    fs::write(root.join("train/1.png"), png(64, 64, 7)).unwrap();
    let lines = [
        json!({"file_name": "train/0.png", "text": "an astronaut riding a horse on the moon"})
            .to_string(),
        "{not json".to_string(),
        json!({"file_name": "train/1.png", "text": "A City Street at NIGHT,   neon lights!!"})
            .to_string(),
        json!({"file_name": "train/missing.png", "text": "gone"}).to_string(),
    ];
    fs::write(root.join("metadata.jsonl"), lines.join("\n")).unwrap();
    root
}

/// webdataset shard: .png+.txt, .png+.json, a caption without an image, a corrupt image.
fn wds(dir: &Path) -> PathBuf {
    let path = dir.join("data-000.tar");
    let mut tar = tar::Builder::new(fs::File::create(&path).unwrap());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, bytes).unwrap();
    };
    add("000.png", &png(64, 64, 8));
    add("000.txt", b"a bowl of fruit on a wooden table");
    add("001.png", &png(64, 64, 9));
    add(
        "001.json",
        br#"{"caption": "portrait of a woman, studio lighting", "width": 64}"#,
    );
    add("002.txt", b"caption without an image");
    add("003.png", CORRUPT);
    add("003.txt", b"corrupt");
    tar.finish().unwrap();
    path
}

fn manifest(out: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

fn pre_encode(extra: &[&str]) -> std::process::Output {
    let m = model();
    let mut args = vec!["pre-encode", "--model", s(&m), "-q"];
    args.extend(extra);
    ldmkit(&args)
}

fn check_against_reference(out: &Path) {
    let Some(result) = py(
        "encode_ref.py",
        &[
            "encoded",
            s(out),
            "--model",
            s(&model()),
            "--config",
            s(&fixture("layouts/sd1_config.json")),
            "--tokenizer",
            s(&tokenizer()),
        ],
    ) else {
        eprintln!("LDMKIT_PYTHON not set: diffusers/transformers comparison skipped");
        return;
    };
    ok(&result, "encode_ref.py encoded");
    eprintln!("{}", stdout(&result));
}

#[test]
fn pre_encode_three_layouts_matches_diffusers_and_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let (k, h, w) = (kohya(dir.path()), hf(dir.path()), wds(dir.path()));
    let prompts = dir.path().join("prompts.txt");
    fs::write(
        &prompts,
        "# previews\na photo of a cat\n\nthe dog's ball in the garden\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = pre_encode(&[
        "--tokenizer",
        s(&tokenizer()),
        "--data",
        s(&k),
        s(&h),
        s(&w),
        "--out",
        s(&out),
        "--resolution",
        RES,
        "--flip",
        "--dtype",
        "f32",
        "--batch-size",
        "2",
        "--shard-size",
        "3",
        "--sample-prompts",
        s(&prompts),
    ]);
    ok(&o, "pre-encode");
    let m = manifest(&out);
    // kohya 5 + hf 2 + wds 2 good images, each also mirrored.
    assert_eq!(m["counts"]["images"], 9, "{m:#}");
    assert_eq!(m["counts"]["flipped"], 9);
    assert_eq!(m["counts"]["samples"], 18);
    assert_eq!(m["counts"]["uncaptioned"], 1);
    // broken.png, the bad JSON line, the missing file, the caption-only key, corrupt 003.png.
    assert_eq!(m["counts"]["skipped"], 5, "{:#}", m["skipped"]);
    let skipped = m["skipped"].to_string();
    for what in [
        "broken.png",
        "metadata.jsonl:2",
        "missing.png",
        "002",
        "003.png",
    ] {
        assert!(
            skipped.contains(what),
            "{what} not reported as skipped: {skipped}"
        );
    }
    assert!(
        stdout(&o).contains("skipped 5 unreadable input(s)"),
        "{}",
        stdout(&o)
    );
    let layouts: Vec<&str> = m["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["layout"].as_str().unwrap())
        .collect();
    assert_eq!(layouts, ["image folder", "metadata.jsonl", "webdataset"]);
    assert_eq!(m["latents"]["scaling_factor"], 0.18215);
    assert_eq!(m["text"]["width"], 64);
    // Shards: at most 3 samples each, every key once, hashes right, tensors shaped.
    let mut keys = HashSet::new();
    for shard in m["shards"].as_array().unwrap() {
        let bytes = fs::read(out.join(shard["file"].as_str().unwrap())).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let n = shard["samples"].as_array().unwrap().len();
        assert!((1..=3).contains(&n));
        assert_eq!(st.tensor("latent_mean").unwrap().shape(), [n, 4, 8, 8]);
        assert_eq!(st.tensor("latent_std").unwrap().shape(), [n, 4, 8, 8]);
        assert_eq!(st.tensor("text").unwrap().shape(), [n, 77, 64]);
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(shard["sha256"], digest.as_str());
        for sample in shard["samples"].as_array().unwrap() {
            assert!(keys.insert(sample["key"].as_str().unwrap().to_string()));
            assert_eq!(sample["source_sha256"].as_str().unwrap().len(), 64);
        }
    }
    assert_eq!(keys.len(), 18);
    assert!(keys.contains("kohya/10_cat/c.png") && keys.contains("data-000.tar/001#flip"));
    check_against_reference(&out);
}

#[test]
fn pre_encode_resumes_and_refuses_other_settings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("set");
    fs::create_dir_all(&data).unwrap();
    for i in 0..5 {
        fs::write(data.join(format!("{i}.png")), png(64, 64, 20 + i)).unwrap();
        fs::write(data.join(format!("{i}.txt")), format!("image number {i}")).unwrap();
    }
    let out = dir.path().join("out");
    let tok = tokenizer();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "--tokenizer",
            s(&tok),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--resolution",
            RES,
            "--shard-size",
            "2",
        ];
        a.extend(extra);
        pre_encode(&a)
    };
    ok(&run(&[]), "first run");
    let first = manifest(&out);
    assert_eq!(first["counts"]["samples"], 5);
    // Two more images: only they are encoded; earlier shards are untouched.
    for i in 5..7 {
        fs::write(data.join(format!("{i}.png")), png(64, 64, 20 + i)).unwrap();
    }
    let o = run(&[]);
    ok(&o, "second run");
    assert!(
        stdout(&o).contains("2 sample(s) encoded now, 5 already done"),
        "{}",
        stdout(&o)
    );
    let second = manifest(&out);
    assert_eq!(second["counts"]["samples"], 7);
    assert_eq!(second["counts"]["uncaptioned"], 2);
    for (a, b) in first["shards"]
        .as_array()
        .unwrap()
        .iter()
        .zip(second["shards"].as_array().unwrap())
    {
        assert_eq!(a, b, "a finished shard changed on resume");
    }
    // Nothing left: a third run encodes nothing.
    let o = run(&[]);
    assert!(
        stdout(&o).contains("0 sample(s) encoded now, 7 already done"),
        "{}",
        stdout(&o)
    );
    // Other settings into the same folder are refused, naming it.
    let o = run(&["--flip"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains(s(&out)) && stderr(&o).contains("other options"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn pre_encode_buckets_by_aspect_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("b");
    fs::create_dir_all(&data).unwrap();
    for (i, (w, h)) in [(128, 128), (256, 128), (128, 256), (200, 100)]
        .iter()
        .enumerate()
    {
        fs::write(data.join(format!("{i}.png")), png(*w, *h, i as u32)).unwrap();
    }
    let out = dir.path().join("out");
    let o = pre_encode(&[
        "--tokenizer",
        s(&tokenizer()),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--resolution",
        "128",
        "--buckets",
    ]);
    ok(&o, "pre-encode --buckets");
    let m = manifest(&out);
    let buckets: Vec<(u64, u64, u64)> = m["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["width"].as_u64().unwrap(),
                b["height"].as_u64().unwrap(),
                b["samples"].as_u64().unwrap(),
            )
        })
        .collect();
    // 128² area: the square, 192x64 for both 2:1 images, 64x192 for the 1:2 one (the
    // nearest ratios among sides that are multiples of 64).
    assert_eq!(
        buckets,
        [(64, 192, 1), (128, 128, 1), (192, 64, 2)],
        "{m:#}"
    );
    for shard in m["shards"].as_array().unwrap() {
        let bytes = fs::read(out.join(shard["file"].as_str().unwrap())).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (w, h) = (
            shard["width"].as_u64().unwrap() as usize,
            shard["height"].as_u64().unwrap() as usize,
        );
        assert_eq!(
            st.tensor("latent_mean").unwrap().shape()[2..],
            [h / 8, w / 8]
        );
    }
}

#[test]
fn pre_encode_from_a_diffusers_folder_equals_the_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    ok(
        &ldmkit(&[
            "convert",
            s(&model()),
            "--layout",
            "diffusers",
            "-o",
            s(&folder),
        ]),
        "convert",
    );
    fs::create_dir_all(folder.join("tokenizer")).unwrap();
    for f in [
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        fs::copy(tokenizer().join(f), folder.join("tokenizer").join(f)).unwrap();
    }
    let data = dir.path().join("d");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("x.png"), png(64, 64, 3)).unwrap();
    fs::write(data.join("x.txt"), "a photo of a cat").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(
        &pre_encode(&[
            "--tokenizer",
            s(&tokenizer()),
            "--data",
            s(&data),
            "--out",
            s(&a),
            "--resolution",
            RES,
        ]),
        "single file",
    );
    let o = ldmkit(&[
        "pre-encode",
        "-q",
        "--model",
        s(&folder),
        "--data",
        s(&data),
        "--out",
        s(&b),
        "--resolution",
        RES,
    ]);
    ok(&o, "diffusers folder (tokenizer from its tokenizer/)");
    let read = |d: &Path| fs::read(d.join("shard-00000.safetensors")).unwrap();
    assert!(
        read(&a) == read(&b),
        "the folder's shard differs from the single file's"
    );
}

#[test]
fn pre_encode_lists_every_missing_or_misshapen_key() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = fs::read(model()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut kept: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    for (name, view) in st.tensors() {
        if name.starts_with("first_stage_model.encoder.mid.attn_1.")
            || name == "first_stage_model.quant_conv.bias"
        {
            continue;
        }
        kept.push((name, view));
    }
    // Swap in a wrongly shaped norm_out (64 channels there; conv_in's bias has 32).
    let bad = st.tensor("first_stage_model.encoder.conv_in.bias").unwrap();
    kept.retain(|(n, _)| n != "first_stage_model.encoder.norm_out.weight");
    kept.push(("first_stage_model.encoder.norm_out.weight".into(), bad));
    let broken = dir.path().join("broken.safetensors");
    fs::write(&broken, safetensors::serialize(kept, None).unwrap()).unwrap();
    let data = dir.path().join("d");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("x.png"), png(64, 64, 3)).unwrap();
    let out = dir.path().join("out");
    let o = ldmkit(&[
        "pre-encode",
        "--model",
        s(&broken),
        "--tokenizer",
        s(&tokenizer()),
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(s(&broken)), "{err}");
    assert!(
        err.contains("vae.encoder.mid_block.attentions.0.to_q.weight is missing"),
        "{err}"
    );
    assert!(err.contains("vae.quant_conv.bias is missing"), "{err}");
    assert!(
        err.contains("vae.encoder.conv_norm_out.weight is [32], the model needs [64]"),
        "{err}"
    );
    assert!(
        !out.join("manifest.json").exists(),
        "nothing is written for a bad model"
    );
}

#[test]
fn tokenize_matches_transformers_clip_tokenizer() {
    let captions = [
        "a photo of a cat",
        "A Photo   of a CAT!!",
        "the cat's toy; it's the dog's ball -- isn't it?",
        "café crème brûlée, naïve résumé",
        "東京の猫 and 北京 cats",
        "emoji 🐱🐶 and symbols © ® ™ ½",
        "tab\tand\nnewline\r\nand\u{7}bell",
        "numbers 1234567 and 3.14159, 10,000",
        "<|endoftext|> inside a caption",
        "",
        &"a very long caption about a cat, ".repeat(20),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, tok) in [("slow", tokenizer()), ("fast", fixture("tokenizer.json"))] {
        let mut args = vec!["tokenize", "--json", "--tokenizer", s(&tok)];
        args.extend(captions.iter().copied());
        let o = ldmkit(&args);
        ok(&o, "tokenize");
        let rows: Value = serde_json::from_str(&stdout(&o)).unwrap();
        let rows = rows.as_array().unwrap();
        assert_eq!(rows.len(), captions.len());
        for r in rows {
            assert_eq!(r["ids"].as_array().unwrap().len(), 77);
        }
        assert_eq!(rows.last().unwrap()["truncated"], true);
        let file = dir.path().join(format!("{name}.json"));
        fs::write(&file, stdout(&o)).unwrap();
        let (slow, fast) = (tokenizer(), fixture("tokenizer.json"));
        let mut check = vec!["tokens", s(&file), "--tokenizer", s(&slow)];
        if name == "fast" {
            // A tokenizer.json is the fast tokenizer, the reference for it; the slow one
            // (a diffusers tokenizer/ folder) cleans text first.
            check.extend(["--fast", s(&fast)]);
        }
        if let Some(r) = py("encode_ref.py", &check) {
            ok(&r, &format!("encode_ref.py tokens ({name})"));
        }
    }
}

#[test]
fn sample_draws_reproducible_images() {
    let dir = tempfile::tempdir().unwrap();
    let (m, tok) = (model(), tokenizer());
    let draw = |seed: &str, out: &Path| {
        ldmkit(&[
            "sample",
            "-q",
            "--model",
            s(&m),
            "--tokenizer",
            s(&tok),
            "--prompt",
            "a photo of a cat",
            "--width",
            "64",
            "--height",
            "128",
            "--steps",
            "3",
            "--seed",
            seed,
            "-o",
            s(out),
        ])
    };
    let (a, b, c) = (
        dir.path().join("a.png"),
        dir.path().join("b.png"),
        dir.path().join("c.png"),
    );
    ok(&draw("7", &a), "sample");
    ok(&draw("7", &b), "sample again");
    ok(&draw("8", &c), "sample, another seed");
    let img = image::open(&a).unwrap();
    assert_eq!((img.width(), img.height()), (64, 128));
    assert!(
        fs::read(&a).unwrap() == fs::read(&b).unwrap(),
        "same seed, same image"
    );
    assert!(
        fs::read(&a).unwrap() != fs::read(&c).unwrap(),
        "another seed, another image"
    );
    // A single file has no tokenizer: one line naming the model.
    let o = ldmkit(&["sample", "--model", s(&m), "--prompt", "x", "-o", s(&a)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("holds no tokenizer"), "{}", stderr(&o));
}
