//! `inspect --json` against a Python walk of what real torch loads.
//!
//! Goldens in tests/fixtures/expected/ were written by tests/python/walk.py with the pinned
//! torch. When LDMKIT_PYTHON names a Python with that torch (CI sets it to the venv's), the
//! walk also runs live, so a stale golden cannot hide a difference.

use crate::util::{checkpoints_in, inspect_json, repo};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

type Listing = BTreeSet<(String, String, Vec<u64>, u64)>;

fn listing(v: &serde_json::Value) -> Listing {
    v["tensors"]
        .as_array()
        .expect("tensors array")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["dtype"].as_str().unwrap().to_string(),
                t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect(),
                t["bytes"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn compare(file: &Path, ours: &Listing, reference: &Listing, source: &str) {
    let missing: Vec<_> = reference.difference(ours).take(5).collect();
    let extra: Vec<_> = ours.difference(reference).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{}: differs from {source}\n  only in torch: {missing:?}\n  only in ldmkit: {extra:?}",
        file.display()
    );
}

#[test]
fn every_fixture_lists_what_torch_loads() {
    let fixtures = checkpoints_in(&repo().join("tests/fixtures"));
    assert!(fixtures.len() >= 10, "fixtures missing: {fixtures:?}");
    let python = std::env::var("LDMKIT_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    for file in &fixtures {
        let ours = listing(&inspect_json(file));
        let name = file.file_name().unwrap().to_str().unwrap();
        let golden = repo()
            .join("tests/fixtures/expected")
            .join(format!("{name}.json"));
        let golden: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&golden).unwrap_or_else(|_| panic!("no golden {}", golden.display())),
        )
        .unwrap();
        compare(file, &ours, &listing(&golden), "the golden walk");
        if let Some(python) = &python {
            let out = Command::new(python)
                .arg(repo().join("tests/python/walk.py"))
                .arg(file)
                .output()
                .expect("run walk.py");
            assert!(
                out.status.success(),
                "walk.py {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let live: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            compare(file, &ours, &listing(&live), "a live torch.load walk");
        }
    }
}
