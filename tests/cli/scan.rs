//! `ldmkit scan`: verdicts and exit codes.

use crate::util::{fixture, ldmkit, stderr, stdout};

#[test]
fn release_and_safetensors_are_safe() {
    for f in [
        "sd1_release.ckpt",
        "release_fp16.ckpt",
        "sd1_release.safetensors",
        "legacy.pt",
    ] {
        let out = ldmkit(&["scan", fixture(f).to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{f}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

#[test]
fn training_checkpoint_has_unknown_globals() {
    let out = ldmkit(&["scan", fixture("sd1_training.ckpt").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("unknown   omegaconf."),
        "{}",
        stdout(&out)
    );
}

#[test]
fn dangerous_globals_come_first() {
    let f = fixture("hostile/zip_payload.ckpt");
    let out = ldmkit(&["scan", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("DANGEROUS"), "{text}");
    assert!(lines[1].trim_start().starts_with("dangerous"), "{text}");
}

#[test]
fn unreadable_file_exits_2_and_others_are_still_scanned() {
    let good = fixture("sd1_release.ckpt");
    let out = ldmkit(&["scan", "/nonexistent.ckpt", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("error: /nonexistent.ckpt: no such file"));
    assert!(stdout(&out).contains("sd1_release.ckpt: safe"));
}

#[test]
fn json_output() {
    let f = fixture("hostile/os_system.pkl");
    let out = ldmkit(&["scan", "--json", f.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j[0]["verdict"], "dangerous");
    assert_eq!(j[0]["globals"][0]["name"], "os.system");
}
