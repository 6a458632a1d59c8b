//! The hostile corpus (tests/fixtures/hostile, made by its generate.py; MANIFEST.json says
//! what each file must produce). Payloads would `touch /tmp/ldmkit-pwned-*` if executed.

use crate::util::{ldmkit, repo, stderr, stdout};

#[derive(Debug)]
struct Case {
    file: String,
    expect: String,
    dangerous: Vec<String>,
    container: String,
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
            dangerous: e["dangerous"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_string())
                .collect(),
            container: e["container"].as_str().unwrap_or("").to_string(),
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
                if case.container != "pickle" {
                    assert_eq!(
                        inspect.status.code(),
                        Some(0),
                        "inspect {}: {}",
                        case.file,
                        stderr(&inspect)
                    );
                } else {
                    assert_one_line_error(case, &inspect, "inspect");
                }
                let expected = if case.dangerous.is_empty() { 0 } else { 1 };
                assert!(
                    scan.status.code() == Some(expected)
                        || (expected == 0 && scan.status.code() == Some(1)),
                    "scan {}: exit {:?}\n{}{}",
                    case.file,
                    scan.status.code(),
                    stdout(&scan),
                    stderr(&scan)
                );
            }
            other => panic!("unknown expectation {other}"),
        }
        // Every dangerous global is named, by scan and by inspect.
        for d in &case.dangerous {
            let line = format!("dangerous {d} ");
            assert!(
                stdout(&scan).contains(&line),
                "scan {} does not report {d}:\n{}",
                case.file,
                stdout(&scan)
            );
            let inspected = format!("{}{}", stdout(&inspect), stderr(&inspect));
            assert!(
                inspected.contains(d.as_str()),
                "inspect {} does not report {d}:\n{inspected}",
                case.file
            );
        }
    }
    assert!(
        pwned_markers().is_empty(),
        "a payload ran: {:?}",
        pwned_markers()
    );
}
