#!/usr/bin/env python3
"""Compare two `ldmkit pre-encode` folders sample by sample (matched by key).

    compare_encoded.py REFERENCE OTHER [--label NAME]

Prints one JSON line: for latent_mean, latent_std and text, the worst and the median
relative error ||other - ref|| / ||ref|| over the samples (and the extras file's texts).
Used on the GPU machine to hold the CUDA path (fused GroupNorm, cuDNN convolutions, TF32 or
bf16) against the CPU path, which the test suite holds against diffusers/transformers.
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import load_file


def load(folder):
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    samples = {}
    for shard in manifest["shards"]:
        tensors = load_file(os.path.join(folder, shard["file"]))
        for i, s in enumerate(shard["samples"]):
            samples[s["key"]] = {k: v[i].astype(np.float64) for k, v in tensors.items()}
    extras = {k: v.astype(np.float64) for k, v in load_file(os.path.join(folder, manifest["extras"])).items()}
    return samples, extras


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("reference")
    ap.add_argument("other")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    ref, ref_extras = load(a.reference)
    other, other_extras = load(a.other)
    common = sorted(set(ref) & set(other))
    if not common:
        raise SystemExit("no samples in common")
    out = {"label": a.label, "samples": len(common)}
    for name in ("latent_mean", "latent_std", "text"):
        errs = [rel(other[k][name], ref[k][name]) for k in common]
        out[name] = {"worst": max(errs), "median": float(np.median(errs))}
    out["extras"] = max(rel(other_extras[k], ref_extras[k]) for k in ref_extras)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
