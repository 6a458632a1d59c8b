//! The hostile corpus (tests/fixtures/hostile, made by its generate.py; MANIFEST.json says
//! what each file must produce). Payloads would `touch /tmp/ldmkit-pwned-*` if executed.

use crate::util::{ldmkit, repo, stderr, stdout};

#[derive(Debug)]
struct Case {
    file: String,
    expect: String,
    dangerous: Vec<String>,
    container: String,
    /// The whole manifest entry (nested, computed, py2, not_allowed, fidelity, torch_values).
    entry: serde_json::Value,
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn manifest() -> Vec<Case> {
    let dir = repo().join("tests/fixtures/hostile");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("MANIFEST.json")).unwrap()).unwrap();
    m.as_array()
        .unwrap()
        .iter()
        .map(|e| Case {
            file: dir
                .join(e["file"].as_str().unwrap())
                .to_str()
                .unwrap()
                .to_string(),
            expect: e["expect"].as_str().unwrap().to_string(),
            dangerous: strings(&e["dangerous"]),
            container: e["container"].as_str().unwrap_or("").to_string(),
            entry: e.clone(),
        })
        .collect()
}

fn pwned_markers() -> Vec<String> {
    std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ldmkit-pwned"))
        .collect()
}

fn assert_one_line_error(case: &Case, out: &std::process::Output, cmd: &str) {
    let err = stderr(out);
    assert!(
        !err.contains("panicked"),
        "{cmd} {}: panic: {err}",
        case.file
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{cmd} {}: expected one error line, got: {err}",
        case.file
    );
    assert!(
        lines[0].starts_with(&format!("error: {}: ", case.file))
            && lines[0].len() > case.file.len() + 12,
        "{cmd} {}: bad error line: {err}",
        case.file
    );
}

#[test]
fn hostile_corpus() {
    let cases = manifest();
    assert!(cases.len() >= 50, "corpus too small: {}", cases.len());
    for m in pwned_markers() {
        let _ = std::fs::remove_file(format!("/tmp/{m}"));
    }
    for case in &cases {
        let inspect = ldmkit(&["inspect", &case.file]);
        let scan = ldmkit(&["scan", &case.file]);
        assert_ne!(
            inspect.status.code(),
            Some(124),
            "inspect {} hung",
            case.file
        );
        assert_ne!(scan.status.code(), Some(124), "scan {} hung", case.file);
        assert!(
            !stderr(&scan).contains("panicked"),
            "scan {}: {}",
            case.file,
            stderr(&scan)
        );
        let fidelity = case.entry["fidelity"].as_bool() == Some(true);
        match case.expect.as_str() {
            "error" => {
                assert_eq!(
                    inspect.status.code(),
                    Some(2),
                    "inspect {} should fail: {}",
                    case.file,
                    stdout(&inspect)
                );
                assert_one_line_error(case, &inspect, "inspect");
                assert_eq!(
                    scan.status.code(),
                    Some(2),
                    "scan {} should fail",
                    case.file
                );
            }
            "report" => {
                // A zip behind a pickle is a bare pickle to torch (it checks the first bytes).
                let bare = case.container == "pickle"
                    || (case.container == "polyglot" && inspect.status.code() == Some(2));
                if bare {
                    // torch.load unpickles a bare pickle: one line that says so, never
                    // "not a checkpoint".
                    assert_one_line_error(case, &inspect, "inspect");
                    assert!(
                        stderr(&inspect).contains("bare pickle")
                            && !stderr(&inspect).contains("not a checkpoint"),
                        "inspect {}: {}",
                        case.file,
                        stderr(&inspect)
                    );
                } else if fidelity && inspect.status.code() == Some(2) {
                    // A file whose values ldmkit cannot read as torch does is refused.
                    assert_one_line_error(case, &inspect, "inspect");
                } else {
                    assert_eq!(
                        inspect.status.code(),
                        Some(0),
                        "inspect {}: {}",
                        case.file,
                        stderr(&inspect)
                    );
                }
                let refused = !case.dangerous.is_empty()
                    || !strings(&case.entry["not_allowed"]).is_empty()
                    || case.container == "polyglot";
                let code = scan.status.code();
                assert!(
                    code == Some(refused as i32) || (fidelity && code == Some(2)),
                    "scan {}: exit {code:?}\n{}{}",
                    case.file,
                    stdout(&scan),
                    stderr(&scan)
                );
                // Refused only for the training extension's classes: --training accepts it.
                let training = refused && code == Some(1) && !stdout(&scan).contains("not allowed");
                if training {
                    let with = ldmkit(&["scan", "--training", &case.file]);
                    assert_eq!(with.status.code(), Some(0), "scan --training {}", case.file);
                }
            }
            other => panic!("unknown expectation {other}"),
        }
        let scanned = stdout(&scan);
        // Every global that runs code is named as not allowed, by scan and by inspect.
        for d in &case.dangerous {
            assert!(
                scanned
                    .lines()
                    .any(|l| l.trim_start().starts_with("not allowed") && l.contains(d.as_str())),
                "scan {} does not report {d} as not allowed:\n{scanned}",
                case.file
            );
            let inspected = format!("{}{}", stdout(&inspect), stderr(&inspect));
            let written = case.entry["py2"]
                .as_object()
                .and_then(|m| m.iter().find(|(_, v)| v.as_str() == Some(d)))
                .map(|(k, _)| k.clone());
            assert!(
                inspected.contains(d.as_str())
                    || written.is_some_and(|w| inspected.contains(&w))
                    || case.expect == "error",
                "inspect {} does not report {d}:\n{inspected}",
                case.file
            );
        }
        for d in strings(&case.entry["not_allowed"]) {
            assert!(
                scanned
                    .lines()
                    .any(|l| l.contains(&d) && !l.trim_start().starts_with("allowed")),
                "scan {} does not refuse {d}:\n{scanned}",
                case.file
            );
        }
        // Nested pickles are followed and located; computed names are named with their maker.
        for path in strings(&case.entry["nested"]) {
            assert!(
                scanned.contains(&path),
                "scan {} does not show `{path}`:\n{scanned}",
                case.file
            );
        }
        for maker in strings(&case.entry["computed"]) {
            assert!(
                scanned
                    .lines()
                    .any(|l| l.contains("computed") && l.contains(&maker)),
                "scan {} does not name the computed global's maker {maker}:\n{scanned}",
                case.file
            );
        }
        if case.container == "polyglot" {
            assert!(
                scanned.contains("NOT ALLOWED"),
                "scan {}: {scanned}",
                case.file
            );
        }
        // Python 2 names: the mapped name, with the written one beside it.
        if let Some(py2) = case.entry["py2"].as_object() {
            let json = ldmkit(&["scan", "--json", &case.file]);
            let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
            let globals = v[0]["globals"].as_array().unwrap();
            for (written, mapped) in py2 {
                assert!(
                    globals
                        .iter()
                        .any(|g| g["name"] == *mapped && g["written"].as_str() == Some(written)),
                    "scan --json {}: no {mapped} written {written}: {globals:?}",
                    case.file
                );
            }
        }
        if fidelity {
            check_values(case);
        }
    }
    assert!(
        pwned_markers().is_empty(),
        "a payload ran: {:?}",
        pwned_markers()
    );
}

/// A fidelity file's tensors read as torch reads them, or the file is refused in one line;
/// two entries that would get one name are never silently one.
fn check_values(case: &Case) {
    let Some(values) = case.entry["torch_values"].as_object() else {
        return;
    };
    let duplicates = strings(&case.entry["duplicate_paths"]);
    for (name, want) in values {
        if duplicates.contains(name) {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out.safetensors");
            let o = ldmkit(&["strip", &case.file, "-o", out.to_str().unwrap()]);
            assert_eq!(
                o.status.code(),
                Some(2),
                "strip {}: {}",
                case.file,
                stderr(&o)
            );
            assert!(stderr(&o).contains(name.as_str()), "{}", stderr(&o));
            assert!(!out.exists());
            continue;
        }
        let o = ldmkit(&["stats", &case.file, name, "--json"]);
        if o.status.code() == Some(2) {
            assert_one_line_error(case, &o, "stats");
            continue;
        }
        assert!(
            o.status.success(),
            "stats {} {name}: {}",
            case.file,
            stderr(&o)
        );
        let got: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * (1.0 + b.abs());
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        assert_eq!(got["numel"], want["numel"], "{} {name}", case.file);
        assert!(
            close(f(&got["min"]), f(&want["min"]))
                && close(f(&got["max"]), f(&want["max"]))
                && close(f(&got["mean"]) * f(&got["numel"]), f(&want["sum"])),
            "{} {name}: ldmkit {got} vs torch {want}",
            case.file
        );
    }
}

/// Where torch.load would unpickle a file (its own loader, in a sandbox with a canary),
/// ldmkit never calls it "not a checkpoint".
#[test]
fn never_not_a_checkpoint_where_torch_unpickles() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("torch_reads.json");
    let Some(run) = crate::util::py(
        "torch_reads.py",
        &[
            repo().join("tests/fixtures/hostile").to_str().unwrap(),
            out.to_str().unwrap(),
        ],
    ) else {
        eprintln!("skipped: LDMKIT_PYTHON is not set");
        return;
    };
    assert!(run.status.success(), "torch_reads.py: {}", stderr(&run));
    let reads: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let dir = repo().join("tests/fixtures/hostile");
    let mut unpickled = 0;
    for r in reads.as_array().unwrap() {
        if r["unpickles"].as_bool() != Some(true) {
            continue;
        }
        unpickled += 1;
        let file = dir.join(r["file"].as_str().unwrap());
        let inspect = ldmkit(&["inspect", file.to_str().unwrap()]);
        let err = stderr(&inspect);
        assert!(
            !err.contains("not a checkpoint"),
            "torch.load unpickles {} but ldmkit says: {err}",
            file.display()
        );
    }
    assert!(unpickled > 50, "only {unpickled} files unpickled by torch");
}
