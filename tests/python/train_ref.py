"""References for ldmkit's trainer, run by the Rust tests with the test venv's torch.

    train_ref.py unet-grad FILE --model LDM_FILE --config CONFIG_JSON
        FILE (safetensors) holds ldmkit's inputs `latents` [b,4,h,w], `timesteps` [b],
        `text` [b,77,w], loss weights `weights` (shaped like the output), its output
        `noise_pred` and, for every UNet parameter, `grad.<diffusers name>`. diffusers'
        UNet2DConditionModel (exact GELU, f32) computes loss = sum(out * weights) with
        per-sample timesteps; the output and every gradient must agree to 1e-4 (relative).

    train_ref.py adamw FILE
        FILE holds `param` and `grad.0`, `grad.1`, ... and ldmkit's `result` after one
        AdamW step per gradient with the hyper-parameters in the metadata; compared with
        torch.optim.AdamW to 1e-6 (relative).

Prints one JSON line with the errors; exits non-zero when a bound is broken.
"""

import argparse
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encode_ref import load_models, rel_err  # noqa: E402

LIMIT = 1e-4


def check_unet_grad(a):
    (unet,) = load_models(a.model, a.config, parts=("unet",))
    unet.train()
    t = load_file(a.path)
    out = unet(t["latents"], t["timesteps"], encoder_hidden_states=t["text"]).sample
    (out * t["weights"]).sum().backward()
    errors = {"output": rel_err(t["noise_pred"], out.detach())}
    worst, missing = ("output", errors["output"]), []
    params = dict(unet.named_parameters())
    # A gradient that is zero in exact arithmetic is rounding noise in both programs (the
    # tiny model's GroupNorms have one channel per group, so every bias that only shifts a
    # channel before one gets none): those are held to the scale of the typical gradient
    # instead of their own.
    scale = sorted(float(p.grad.double().norm()) for p in params.values())[len(params) // 2]
    degenerate = {}
    for name, p in params.items():
        key = f"grad.{name}"
        if key not in t:
            missing.append(name)
            continue
        want = p.grad.double()
        diff = float((t[key].double() - want).norm())
        if float(want.norm()) < 1e-4 * scale:
            degenerate[name] = float(want.norm()) / scale
            e = diff / scale
        else:
            e = diff / float(want.norm())
        errors[name] = e
        if e > worst[1]:
            worst = (name, e)
    bad = sorted(((e, n) for n, e in errors.items() if e > LIMIT), reverse=True)
    print(json.dumps({"parameters": len(errors) - 1, "worst": worst, "output": errors["output"], "over_bound": len(bad), "examples": bad[:12], "zero_gradients": len(degenerate)}))
    if missing:
        raise SystemExit(f"ldmkit gave no gradient for {len(missing)} parameter(s): {missing[:8]}")
    if not worst[1] < LIMIT:
        raise SystemExit(f"{worst[0]} differs from diffusers by {worst[1]:.3g} (bound {LIMIT})")


def check_adamw(a):
    t = load_file(a.path)
    with safe_open(a.path, "pt") as f:
        meta = f.metadata()
    h = {k: float(v) for k, v in meta.items()}
    p = torch.nn.Parameter(t["param"].clone())
    opt = torch.optim.AdamW([p], lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"], weight_decay=h["weight_decay"])
    i = 0
    while f"grad.{i}" in t:
        p.grad = t[f"grad.{i}"].clone()
        opt.step()
        i += 1
    err = rel_err(t["result"], p.detach())
    print(json.dumps({"steps": i, "relative_error": err}))
    if not err < 1e-6:
        raise SystemExit(f"AdamW differs from torch.optim.AdamW by {err:.3g}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["unet-grad", "adamw"])
    ap.add_argument("path")
    ap.add_argument("--model")
    ap.add_argument("--config")
    a = ap.parse_args()
    {"unet-grad": check_unet_grad, "adamw": check_adamw}[a.mode](a)


if __name__ == "__main__":
    main()
