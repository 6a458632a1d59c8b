#!/usr/bin/env python3
"""Write a full-size SD 1.x *release* checkpoint next to the training one.

    PY=$(tests/python/venv.sh | tail -1)
    $PY bench/gen_sd1_release.py                                   # bench/out/sd1-training.ckpt -> bench/out/sd1-release.ckpt
    $PY bench/gen_sd1_release.py TRAINING.ckpt OUT.ckpt
    $PY bench/gen_sd1_release.py /tmp/sd1-tiny.ckpt /tmp/sd1-tiny-release.ckpt   # from a --scale-test training file

The base for `bench/merge_vs_python.sh` (`ldmkit merge TRAINING BASE`): what
a pruned release of the training run looks like, `{"state_dict": sd}` where
sd is the training checkpoint's state_dict without the LitEma copy
(`model_ema.*`), in the same key order: 12 schedule buffers + `logvar`, the
UNet (`model.diffusion_model.*`, 686 keys), the VAE (`first_stage_model.*`,
248) and CLIP-L (`cond_stage_model.transformer.text_model.*`, 197), 1,144
tensors, 4.27 GB of float32 (int64 position_ids).
gen_sd1_training_ckpt.py already writes CLIP; should TRAINING lack it, the
CLIP keys are appended with the real shapes (gen_sd1_training_ckpt.clip_keys,
uninitialised data, position_ids 0..76), so the release always has UNet +
VAE + CLIP. The key counts are asserted.

TRAINING is opened with torch.load(mmap=True): only data.pkl is parsed up
front and torch.save then streams each tensor from the mapped file, so peak
RSS stays small (mapped file pages are counted in RSS while touched but are
page cache, not anonymous memory). Written through a file object, so the zip
folder is `archive/` like released SD .ckpt files, to OUT.partial first and
renamed at the end. Tensor values are whatever TRAINING holds (zeros for
the generated benchmark file); only names, shapes and dtypes matter here.
"""

import argparse
import collections
import os
import resource
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import gen_sd1_training_ckpt as gen  # noqa: E402  (no side effects on import)

UNET, VAE, CLIP, EMA = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "model_ema."
CLIP_PREFIX = "cond_stage_model.transformer."


def dims_of(sd):
    """FULL or TINY, whichever reproduces the training file's UNet shapes."""
    for d in (gen.FULL, gen.TINY):
        want = {UNET + k: tuple(s) for k, s in gen.unet_keys(d)}
        if all(k in sd and tuple(sd[k].shape) == s for k, s in want.items()):
            return d
    raise SystemExit("error: the training checkpoint's UNet matches neither FULL nor TINY SD 1.x shapes")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("training", nargs="?", default=os.path.join(HERE, "out", "sd1-training.ckpt"))
    ap.add_argument("out", nargs="?", default=os.path.join(HERE, "out", "sd1-release.ckpt"))
    args = ap.parse_args(argv)

    t0 = time.time()
    ck = torch.load(args.training, mmap=True, weights_only=False, map_location="cpu")
    sd = collections.OrderedDict((k, v) for k, v in ck["state_dict"].items() if not k.startswith(EMA))
    del ck
    added = 0
    if not any(k.startswith(CLIP) for k in sd):
        d = dims_of(sd)
        for k, s, dt in gen.clip_keys(d):
            if k.endswith("position_ids"):
                sd[CLIP_PREFIX + k] = torch.arange(d["clip_positions"], dtype=torch.int64)[None]
            else:
                sd[CLIP_PREFIX + k] = torch.empty(s, dtype=dt)
            added += 1

    counts = {p: sum(1 for k in sd if k.startswith(p)) for p in (UNET, VAE, CLIP)}
    want = {UNET: gen.EXPECTED["unet"][0], VAE: gen.EXPECTED["vae"][0], CLIP: gen.EXPECTED["clip"][0]}
    assert counts == want, f"key counts {counts}, expected {want}"
    n_bytes = sum(v.numel() * v.element_size() for v in sd.values())
    print(
        f"{len(sd)} tensors ({added} CLIP keys added), {n_bytes:,} bytes; loaded in {time.time() - t0:.1f}s",
        file=sys.stderr,
    )

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".partial"
    t1 = time.time()
    with open(tmp, "wb") as f:
        torch.save({"state_dict": sd}, f)
    os.replace(tmp, args.out)
    size = os.path.getsize(args.out)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"wrote {args.out}: {size:,} bytes ({size / 1e9:.2f} GB) in {time.time() - t1:.1f}s; peak RSS {rss_kb / 1024:.0f} MiB",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
