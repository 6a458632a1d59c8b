#!/usr/bin/env python3
"""Does Lightning still resume training from this checkpoint?

    PY=$(tests/python/venv.sh | tail -1)
    $PY tests/python/resume_lightning.py CKPT [--expect-weights BASE]

A rewritten training checkpoint (ldmkit graft, cast, ...) is only useful if
the trainer that wrote it can pick it up again. This script is that trainer:
it builds the fixture's LatentDiffusion LightningModule (imported from
tests/fixtures/generate.py, same config, same 2-sample data, same
ModelCheckpoint arguments, CPU), then runs
`Trainer(max_steps=S + 1).fit(model, ckpt_path=CKPT, weights_only=False)`
where S is CKPT's global_step, i.e. exactly one more optimizer step.
Lightning restores the module weights (strict), AdamW and LambdaLR state,
loop progress and the ModelCheckpoint state (its `dirpath` differs from the
one recorded, a temporary directory, so Lightning only reloads
best_model_path; that is expected).

Checked, each a failure (exit 1) if false:
  * at on_train_start (everything restored, nothing trained yet):
    - trainer.global_step == S;
    - the module's state_dict equals CKPT["state_dict"]: same keys, and each
      tensor bit-identical (dtype, shape, bytes; see compare.py);
    - the optimizer's per-parameter state (step, exp_avg, exp_avg_sq)
      equals CKPT["optimizer_states"][0]["state"], bit for bit;
    - with --expect-weights BASE: every state_dict key that does not start
      with "cond_stage_model." and is in BASE's state dict equals BASE's
      tensor (the graft contract; at least one such key must exist);
  * after fit: trainer.global_step == S + 1, and the UNet changed (the
    step really trained).

On success prints "resumed: step S -> S+1" (plus one line per check) and
exits 0. Needs generate.py's dependencies: torch, pytorch_lightning,
omegaconf, safetensors, numpy.
"""

import argparse
import os
import shutil
import sys
import tempfile
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from pytorch_lightning.callbacks import Callback, ModelCheckpoint  # noqa: E402

import compare  # noqa: E402
import generate  # noqa: E402  (no side effects: main() is behind __name__)


class Probe(Callback):
    """Snapshots what Lightning restored, before the first step changes it."""

    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.opt_state = {
            k: {n: t.detach().clone() for n, t in s.items()} for k, s in trainer.optimizers[0].state_dict()["state"].items()
        }


def state_dict_of(path):
    obj = compare.load(path, weights_only=False, mmap=False)
    return obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj


def same(a, b):
    return (
        a.dtype == b.dtype
        and tuple(a.shape) == tuple(b.shape)
        and torch.equal(compare.tensor_bytes(a), compare.tensor_bytes(b))
    )


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt")
    ap.add_argument(
        "--expect-weights",
        metavar="BASE",
        help="also require the restored weights to equal BASE's (except cond_stage_model.*)",
    )
    args = ap.parse_args(argv)

    ck = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    start = ck["global_step"]
    failures = []

    pl.seed_everything(0, workers=True, verbose=False)
    model = generate.LatentDiffusion(OmegaConf.create(generate.LDM_CONFIG))
    probe = Probe()
    tmp = tempfile.mkdtemp(prefix="ldmkit-resume-")
    try:
        # Same arguments as the generator's callback -> same state_key, so
        # Lightning hands it the checkpoint's callback state.
        callback = ModelCheckpoint(dirpath=tmp, monitor="train_loss", save_top_k=1, every_n_train_steps=1)
        trainer = generate.quiet_trainer(start + 1, [callback, probe])
        with warnings.catch_warnings():
            # Few dataloader workers, changed ModelCheckpoint dirpath: expected.
            warnings.simplefilter("ignore")
            trainer.fit(
                model,
                torch.utils.data.DataLoader(generate.training_data(), batch_size=1),
                ckpt_path=args.ckpt,
                weights_only=False,  # Lightning checkpoints pickle OmegaConf etc.
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if not hasattr(probe, "step"):
        print("FAIL: training never started (on_train_start not reached)")
        return 1
    end = trainer.global_step

    # 1. Restored step and weights are what the file says.
    if probe.step != start:
        failures.append(f"global_step after restore {probe.step}, checkpoint says {start}")
    want = ck["state_dict"]
    if set(probe.weights) != set(want):
        failures.append(
            f"state_dict keys: only in module {sorted(set(probe.weights) - set(want))[:5]}, "
            f"only in checkpoint {sorted(set(want) - set(probe.weights))[:5]}"
        )
    bad = [k for k in want if k in probe.weights and not same(probe.weights[k], want[k])]
    if bad:
        failures.append(f"{len(bad)} restored weights differ from the checkpoint's, e.g. {bad[:3]}")
    else:
        print(f"weights: {len(want)} tensors restored bit-exact from the checkpoint")

    # 2. Optimizer state.
    want_opt = ck["optimizer_states"][0]["state"]
    got_opt = probe.opt_state
    if set(got_opt) != set(want_opt):
        failures.append(f"optimizer state params: {sorted(got_opt)[:5]}... != {sorted(want_opt)[:5]}...")
    else:
        bad = [
            f"{i}/{n}"
            for i in want_opt
            for n in set(want_opt[i]) | set(got_opt[i])
            if n not in want_opt[i] or n not in got_opt[i] or not same(got_opt[i][n], want_opt[i][n])
        ]
        if bad:
            failures.append(f"{len(bad)} optimizer state tensors differ, e.g. {bad[:3]}")
        else:
            n = sum(len(s) for s in want_opt.values())
            print(f"optimizer: {n} state tensors for {len(want_opt)} params restored bit-exact")

    # 3. Graft contract.
    if args.expect_weights:
        base = state_dict_of(args.expect_weights)
        keys = [k for k in probe.weights if not k.startswith("cond_stage_model.") and k in base]
        bad = [k for k in keys if not same(probe.weights[k], base[k])]
        if not keys:
            failures.append(f"--expect-weights: no key in common with {args.expect_weights}")
        elif bad:
            failures.append(f"{len(bad)} of {len(keys)} restored weights differ from {args.expect_weights}, e.g. {bad[:3]}")
        else:
            print(f"expect-weights: {len(keys)} tensors equal {args.expect_weights} (cond_stage_model.* excluded)")

    # 4. One more step happened, and it trained.
    if end != start + 1:
        failures.append(f"global_step after fit {end}, expected {start + 1}")
    after = model.state_dict()
    changed = sum(
        1 for k in probe.weights if k.startswith("model.diffusion_model.") and not torch.equal(probe.weights[k], after[k])
    )
    if not changed:
        failures.append("no UNet weight changed during the extra step")

    if failures:
        for f in failures:
            print(f"FAIL: {f}")
        return 1
    print(f"trained: {changed} UNet tensors changed")
    print(f"resumed: step {start} -> {end}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
