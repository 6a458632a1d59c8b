//! Data-parallel training's logic on the CPU, through `ldmkit train --simulate-ranks N` (N
//! ranks as threads summing through memory where GPUs use NCCL): 2 and 4 ranks give one
//! rank's losses and weights with the same global batch (a short last batch leaves some
//! ranks without samples), only rank 0 writes the run folder, and a run resumes with another
//! rank count.

use crate::trainer::model;
use crate::training::{encode, encode_at, images, train_args};
use crate::util::{ldmkit, ok, s, stderr};
use std::fs;
use std::path::Path;

/// `train_args` at global batch 4 over `ranks` simulated ranks (0: no data parallelism).
fn run(m: &Path, enc: &Path, prior: &Path, out: &Path, steps: &str, ranks: usize) {
    let mut args = train_args(m, enc, prior, out, steps);
    let at = args.iter().position(|a| *a == "--batch-size").unwrap();
    args[at + 1] = "4";
    let n = ranks.to_string();
    if ranks > 0 {
        args.extend(["--simulate-ranks", n.as_str()]);
    }
    ok(&ldmkit(&args), &format!("train on {ranks} ranks"));
}

/// (step, loss, gradient norm) per logged step.
fn log(run: &Path) -> Vec<(u64, f64, f64)> {
    fs::read_to_string(run.join("loss.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[5].parse().unwrap(),
            )
        })
        .collect()
}

/// f32 sums in another order (per-rank partial gradients, then their sum): equal to 1e-5.
fn assert_same_losses(want: &[(u64, f64, f64)], got: &[(u64, f64, f64)], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: steps logged");
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(1e-3);
    for (w, g) in want.iter().zip(got) {
        assert_eq!(w.0, g.0);
        assert!(
            close(w.1, g.1),
            "{what}: step {} loss {} vs {}",
            w.0,
            w.1,
            g.1
        );
        assert!(
            close(w.2, g.2),
            "{what}: step {} gradient norm {} vs {}",
            w.0,
            w.2,
            g.2
        );
    }
}

#[test]
fn ranks_train_like_one_gpu_with_the_same_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    // 5 samples at batch 4: every epoch ends with a one-sample batch, so with 2 and 4 ranks
    // some ranks have nothing to compute in some micro-batches. At 128², not 64²: at 64² the
    // tiny UNet's middle block is 2×2 with one channel per GroupNorm group, where the
    // gradients are so ill-conditioned that f32 summation order alone moves some by 1e-2.
    let enc = dir.path().join("enc");
    encode_at(&images(dir.path(), 5), &enc, "128");
    let class_dir = dir.path().join("class");
    fs::create_dir_all(&class_dir).unwrap();
    let prior = dir.path().join("prior");
    encode_at(&images(&class_dir, 3), &prior, "128");
    let m = model();

    let one = dir.path().join("one");
    run(&m, &enc, &prior, &one, "6", 0);
    let want = log(&one);
    let state = |run: &Path| fs::read(run.join("checkpoints/step-00000006/state.json")).unwrap();
    for ranks in [2, 4] {
        let out = dir.path().join(format!("ranks{ranks}"));
        run(&m, &enc, &prior, &out, "6", ranks);
        assert_same_losses(&want, &log(&out), &format!("{ranks} ranks"));
        // Data cursors, counters and RNG state are global: the same for any rank count.
        assert_eq!(state(&one), state(&out), "{ranks} ranks: state.json");
        // Rank 0 alone wrote the run: one log row per step, the same checkpoints.
        let names = |run: &Path| {
            let mut v: Vec<String> = fs::read_dir(run.join("checkpoints"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&out), names(&one));
    }

    // 4 ranks for 3 steps, resumed on 2 ranks to 6: the one-rank run's losses again.
    let switched = dir.path().join("switched");
    run(&m, &enc, &prior, &switched, "3", 4);
    let resumed = ldmkit(&[
        "train",
        "-q",
        "--resume",
        s(&switched),
        "--steps",
        "6",
        "--simulate-ranks",
        "2",
    ]);
    ok(&resumed, "resume on 2 ranks");
    assert_same_losses(&want, &log(&switched), "4 ranks, resumed on 2");
    assert_eq!(state(&one), state(&switched), "resumed: state.json");
}

#[test]
fn more_ranks_than_samples_per_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let enc = dir.path().join("enc");
    encode(&images(dir.path(), 2), &enc);
    let m = model();
    let out = dir.path().join("run");
    let r = ldmkit(&[
        "train",
        "-q",
        "--model",
        s(&m),
        "--data",
        s(&enc),
        "--out",
        s(&out),
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--simulate-ranks",
        "3",
    ]);
    assert!(!r.status.success());
    let err = stderr(&r);
    assert!(err.contains("--batch-size 2 is the global batch"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Without NCCL in this build, --gpus says so in one line.
    let r = ldmkit(&[
        "train",
        "-q",
        "--model",
        s(&m),
        "--data",
        s(&enc),
        "--out",
        s(&out),
        "--gpus",
        "2",
    ]);
    assert!(!r.status.success());
    assert_eq!(stderr(&r).trim().lines().count(), 1, "{}", stderr(&r));
}
