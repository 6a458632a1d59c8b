//! Running the binary and finding fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// The checkpoints (not scripts, docs or goldens) directly in a fixture folder, sorted.
pub fn checkpoints_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            ["ckpt", "pt", "pth", "bin", "safetensors", "pkl"].contains(&ext)
        })
        .collect();
    files.sort();
    files
}

/// Run `ldmkit ARGS` under a 2 GB address-space limit and a 2-minute timeout, so unbounded
/// allocation or a hang fails the test instead of the machine.
pub fn ldmkit(args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_ldmkit");
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2000000; exec timeout 120 \"$0\" \"$@\"")
        .arg(bin)
        .args(args)
        .output()
        .expect("run ldmkit");
    if out.status.success() {
        check_torch_output(args);
    }
    out
}

/// Every `.ckpt` (torch zip) a rewrite of the suite writes loads with
/// `torch.load(weights_only=True)` — a release holds only tensors and allowlisted
/// containers; a graft may add the training extension's classes, and nothing else — unless
/// the command kept foreign objects on purpose (`--keep-foreign`). Checked right after
/// the command, with the test venv's torch, where the environment names one (CI does).
fn check_torch_output(args: &[&str]) {
    const REWRITES: &[&str] = &[
        "strip",
        "merge",
        "graft",
        "convert",
        "weighted-sum",
        "add-difference",
        "bake-vae",
        "bake-lora",
        "apply",
        "export",
        "meta",
    ];
    let (Some(cmd), Some(python)) = (args.first(), python()) else {
        return;
    };
    if !REWRITES.contains(cmd)
        || args.contains(&"--keep-foreign")
        || args.contains(&"--print-recipe")
    {
        return;
    }
    let Some(out) = args
        .iter()
        .position(|a| *a == "-o" || *a == "--output")
        .and_then(|i| args.get(i + 1))
    else {
        return;
    };
    let ext = Path::new(out)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    if !["ckpt", "pt", "pth", "bin"].contains(&ext) || !Path::new(out).is_file() {
        return;
    }
    let mut check = Command::new(python);
    check.arg(repo().join("tests/python/weights_only.py"));
    if *cmd == "graft" || *cmd == "apply" {
        check.arg("--training");
    }
    let result = check.arg(out).output().expect("run weights_only.py");
    assert!(
        result.status.success(),
        "ldmkit {args:?} wrote a .ckpt that torch.load(weights_only=True) refuses:\n{}{}",
        stdout(&result),
        stderr(&result)
    );
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Inspect a file as JSON, asserting success.
pub fn inspect_json(path: &Path) -> serde_json::Value {
    let out = ldmkit(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

/// The test venv's Python, when the environment names one (CI does).
pub fn python() -> Option<PathBuf> {
    let p = std::env::var_os("LDMKIT_PYTHON")?;
    Some(PathBuf::from(p))
}

pub fn py(script: &str, args: &[&str]) -> Option<Output> {
    let python = python()?;
    Some(
        Command::new(python)
            .arg(repo().join("tests/python").join(script))
            .args(args)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .expect("run python"),
    )
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}
