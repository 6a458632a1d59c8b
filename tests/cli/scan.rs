//! `ldmkit scan`: verdicts and exit codes.

use crate::util::{fixture, ldmkit, s, stderr, stdout};

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
fn training_checkpoint_is_accepted_only_with_the_extension() {
    // torch's weights_only loader refuses OmegaConf's classes: exit 1 by default, each named
    // "training"; with --training, the named extension accepts them.
    let f = fixture("sd1_training.ckpt");
    let out = ldmkit(&["scan", s(&f)]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("training     omegaconf.dictconfig.DictConfig"),
        "{text}"
    );
    assert!(
        text.contains("builtins.int (1x) [written __builtin__.long]"),
        "{text}"
    );
    assert!(!text.contains("not allowed"), "{text}");
    assert_eq!(
        ldmkit(&["scan", "--training", s(&f)]).status.code(),
        Some(0)
    );
}

#[test]
fn dangerous_globals_come_first() {
    let f = fixture("hostile/zip_payload.ckpt");
    let out = ldmkit(&["scan", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("NOT ALLOWED"), "{text}");
    assert!(
        lines[1].trim_start().starts_with("not allowed")
            && lines[1].contains("runs shell commands"),
        "{text}"
    );
}

#[test]
fn unreadable_file_exits_2_and_others_are_still_scanned() {
    let good = fixture("sd1_release.ckpt");
    let out = ldmkit(&["scan", "/nonexistent.ckpt", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("error: /nonexistent.ckpt: no such file"));
    assert!(stdout(&out).contains("sd1_release.ckpt: allowed"));
}

#[test]
fn json_output() {
    let f = fixture("hostile/os_system.pkl");
    let out = ldmkit(&["scan", "--json", f.to_str().unwrap()]);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j[0]["verdict"], "not_allowed");
    assert_eq!(j[0]["globals"][0]["name"], "os.system");
    assert_eq!(j[0]["globals"][0]["why"], "runs shell commands");
}

#[test]
fn a_folder_scans_every_checkpoint_inside_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for sub in ["unet", "text_encoder", "empty/deeper"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let release = d.join("unet/diffusion_pytorch_model.safetensors");
    let evil = d.join("text_encoder/pytorch_model.bin");
    std::fs::copy(fixture("sd1_release.safetensors"), &release).unwrap();
    std::fs::copy(fixture("hostile/zip_payload.ckpt"), &evil).unwrap();
    std::fs::write(d.join("unet/config.json"), b"{}").unwrap();
    #[cfg(unix)]
    {
        // A loop, and a second name for one file (as hub snapshots link to blobs).
        std::os::unix::fs::symlink(d, d.join("unet/loop")).unwrap();
        std::os::unix::fs::symlink(&release, d.join("unet/zz_link.safetensors")).unwrap();
    }
    let empty = d.join("empty");
    let out = ldmkit(&["scan", s(d), s(&empty)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    let headlines: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
    let expected = [&evil, &release, &empty];
    assert_eq!(headlines.len(), expected.len(), "{text}");
    for (line, path) in headlines.iter().zip(expected) {
        assert!(line.starts_with(&format!("{}: ", path.display())), "{text}");
    }
    // The payload's global is listed under the first headline, before the second.
    let first = text.split(headlines[1]).next().unwrap();
    assert!(first.contains("posix.system"), "{text}");
    assert!(
        headlines[2].ends_with(": no checkpoint files in this folder (looked for .ckpt, .pt, .pth, .bin, .safetensors, .pkl, .pickle)"),
        "{text}"
    );

    let out = ldmkit(&["scan", "--json", s(&empty), s(&release)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j[0]["file"], s(&empty));
    assert_eq!(j[0]["verdict"], serde_json::Value::Null);
    assert_eq!(j[1]["file"], s(&release));
    assert_eq!(j[1]["error"], serde_json::Value::Null);
}
