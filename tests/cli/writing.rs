//! Writing safely: temporaries beside the output, removed on every way out (an error,
//! SIGTERM, SIGHUP) and swept when a killed run left one; a failing output is named as a
//! write error.

use crate::util::{fixture, ldmkit, s, stderr};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
#[cfg(target_os = "linux")]
fn a_failing_output_is_a_write_error_and_leaves_nothing() {
    // A file-size limit makes every write past 4 KiB fail with EFBIG (SIGXFSZ ignored, so the
    // write returns the error instead of killing us): deterministic, no special mount.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for out in ["out.ckpt", "out.safetensors"] {
        let out = d.join(out);
        let o = Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; ulimit -f 8; exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_ldmkit"))
            .args(["strip", s(&fixture("sd1_training.ckpt")), "-o", s(&out)])
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert_eq!(
            err.lines().last().unwrap(),
            format!(
                "error: {}: writing failed: File too large (os error 27)",
                out.display()
            ),
            "{err}"
        );
        assert!(!err.contains("read failed"), "{err}");
        assert!(names(d).is_empty(), "left behind: {:?}", names(d));
    }
}

#[test]
#[cfg(target_os = "linux")]
fn an_output_folder_that_cannot_hold_files_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("out.ckpt");
    let o = ldmkit(&["strip", s(&fixture("sd1_release.ckpt")), "-o", s(&out)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        err.lines().last().unwrap(),
        format!(
            "error: {}: writing failed: cannot create a file in {}: Not a directory (os error 20)",
            out.display(),
            blocker.display()
        ),
        "{err}"
    );
}

/// A safetensors file with one 1 GiB float32 tensor of zeros, sparse: instant to make and
/// taking no disk, but its cast to f16 takes long enough to be stopped mid-write.
fn big_sparse_input(dir: &Path) -> PathBuf {
    let n: u64 = 1 << 28;
    let mut header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
        4 * n
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let path = dir.join("big.safetensors");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    fs::write(&path, &bytes).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(bytes.len() as u64 + 4 * n).unwrap();
    path
}

#[test]
#[cfg(unix)]
fn sigterm_and_sighup_cancel_like_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = big_sparse_input(d);
    for signal in ["TERM", "HUP", "INT"] {
        let out = d.join("out.safetensors");
        let mut child = Command::new(env!("CARGO_BIN_EXE_ldmkit"))
            .args(["strip", s(&input), "--dtype", "f16", "-o", s(&out)])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The temporary exists only once the handler is in place: signal then.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !names(d).iter().any(|n| n.contains(".ldmkit-")) {
            assert!(Instant::now() < deadline, "no temporary appeared");
            assert!(child.try_wait().unwrap().is_none(), "ended before writing");
            std::thread::sleep(Duration::from_millis(1));
        }
        let kill = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(130), "SIG{signal}: {err}");
        assert!(err.contains("cancelled; nothing was written"), "{err}");
        assert_eq!(names(d), ["big.safetensors"], "SIG{signal} left files");
    }
}

#[test]
fn stale_temporaries_of_ours_are_swept_when_writing_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 60 * 60);
    let make = |name: &str, old: bool| {
        let p = d.join(name);
        fs::write(&p, b"x").unwrap();
        if old {
            let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.set_modified(two_days_ago).unwrap();
        }
    };
    make(".model.ckpt.ldmkit-Ab12Cd.tmp", true); // ours, stale: swept
    make(".model.ckpt.ldmkit-12345.tmp", true); // ours from an older version: swept
    make(".other.ckpt.ldmkit-Ef34Gh.tmp", false); // ours, fresh: another run's, kept
    make("notes.ldmkit.tmp", true); // not our pattern: kept
    #[cfg(unix)]
    std::os::unix::fs::symlink(d.join("notes.ldmkit.tmp"), d.join(".x.ldmkit-Ij56Kl.tmp")).unwrap(); // a symlink: kept, its target too
    let out = d.join("out.safetensors");
    let o = ldmkit(&["strip", s(&fixture("sd1_release.ckpt")), "-o", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut expected = vec![
        ".other.ckpt.ldmkit-Ef34Gh.tmp",
        "notes.ldmkit.tmp",
        "out.safetensors",
    ];
    if cfg!(unix) {
        expected.insert(1, ".x.ldmkit-Ij56Kl.tmp");
    }
    assert_eq!(names(d), expected);
}
