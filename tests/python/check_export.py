"""Check a release written by `ldmkit export` the way the usual SD tools load it.

    check_export.py RELEASE --base BASE --unet RUN_UNET --config CONFIG_JSON [--dtype float16]

RELEASE (.safetensors, or .ckpt read with torch.load(weights_only=True)) goes through
diffusers' single-file converters (diffusers.loaders.single_file_utils, what
`from_single_file` calls; ldm_reference.convert) and loads with strict=True into the
UNet2DConditionModel / AutoencoderKL / CLIPTextModel of CONFIG_JSON. Its UNet must equal the
run's checkpoint RUN_UNET (cast to --dtype), its VAE and text encoder must equal BASE's, and
the loaded UNet must give a finite output. Prints one JSON line; exits non-zero otherwise.
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldm_reference as ref  # noqa: E402


def load(path):
    if path.endswith(".safetensors"):
        return load_file(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj.get("state_dict", obj)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("release")
    ap.add_argument("--base", required=True)
    ap.add_argument("--unet", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--dtype", default="float32")
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype)
    release, base, unet = load(a.release), load(a.base), load_file(a.unet)
    with open(a.config) as f:
        configs = {k: v for k, v in json.load(f).items() if k in ("unet", "vae", "text_encoder")}
    models = ref.build_models(configs)
    converted = ref.convert({k: v.float() for k, v in release.items()}, configs)
    for part, model in models.items():
        model.load_state_dict(converted[part], strict=True)
    problems = []
    for k, v in unet.items():
        if k not in release:
            problems.append(f"{k} missing")
        elif release[k].dtype != dtype or not torch.equal(release[k], v.to(dtype)):
            problems.append(f"{k} is not the run's")
    others = [k for k in base if k.startswith(("first_stage_model.", "cond_stage_model."))]
    for k in others:
        want = base[k].to(dtype) if base[k].is_floating_point() else base[k]
        if k not in release or not torch.equal(release[k], want):
            problems.append(f"{k} is not the base's")
    u = models["unet"].eval()
    cfg = configs["unet"]
    with torch.no_grad():
        out = u(torch.randn(1, cfg["in_channels"], 16, 16), 10, encoder_hidden_states=torch.randn(1, 77, cfg["cross_attention_dim"])).sample
    if not torch.isfinite(out).all():
        problems.append("the UNet's output is not finite")
    print(json.dumps({"unet_tensors": len(unet), "base_tensors": len(others), "problems": problems[:5]}))
    if problems:
        raise SystemExit(f"{len(problems)} problem(s): {problems[:5]}")


if __name__ == "__main__":
    main()
