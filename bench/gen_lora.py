#!/usr/bin/env python3
"""Write a random kohya-format LoRA for an LDM/SGM single-file checkpoint,
covering every module kohya's networks/lora.py trains on that model.

    PY=$(tests/python/venv.sh | tail -1)
    $PY bench/gen_lora.py MODEL.safetensors OUT.safetensors --rank 32 [--alpha 16] [--seed N] [--conv]
        [--conv-rank R] [--conv-alpha A] [--rel 0.05] [--no-te]

Modules (kohya sd-scripts networks/lora.py, LoRANetwork):
* UNet: every Linear / Conv2d child of each Transformer2DModel (LDM
  SpatialTransformer): proj_in, proj_out (1x1 convs on SD 1.x, Linear on SD 2.x
  / SDXL) and per transformer block attn1 / attn2 to_q, to_k, to_v, to_out.0,
  ff.net.0.proj, ff.net.2. With --conv (kohya's conv_dim, "LoCon"), also the
  children of ResnetBlock2D / Downsample2D / Upsample2D: conv1, conv2 (3x3,
  --conv-rank / --conv-alpha), time_emb_proj, conv_shortcut (1x1) and the
  down/upsampler convs (3x3).
* Text encoder(s): each CLIPAttention's q_proj, k_proj, v_proj, out_proj and
  each CLIPMLP's fc1, fc2 (SD 2.x: the N-1 OpenCLIP blocks diffusers keeps;
  SDXL: both encoders, every layer).

Names (as kohya writes them): SD 1.x / 2.x: `lora_unet_` + the diffusers UNet
module path, `lora_te_` + the transformers CLIP path, '.' -> '_'. SDXL:
`lora_unet_` + the SGM/LDM path (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`),
`lora_te1_` / `lora_te2_` + the transformers CLIP paths (te2's q/k/v are the
row thirds of OpenCLIP's attn.in_proj_weight).

Tensors: `<name>.lora_down.weight` [r, in] ([r, in, k, k] for convs),
`<name>.lora_up.weight` [out, r] ([out, r, 1, 1]), `<name>.alpha` (0-d), all
float16 as sd-scripts saves with --save_precision fp16; ss_* metadata as
train_network.py writes (a subset). Values: seeded N(0, 1/fan_in) for
lora_down, and lora_up scaled so that dW = (alpha/r) up @ down has std about
REL / sqrt(fan_in), i.e. REL (default 0.05) times a 1/sqrt(fan_in) weight's.

How: MODEL's header only (safe_open shapes, no tensor data) -> meta tensors ->
ldm_reference.derive_configs -> diffusers / transformers models on the meta
device (nothing allocated) -> module paths; every target's weight shape is
checked against MODEL's own tensor (through gen_layouts' diffusers -> LDM
name mapping), so a file that does not match the model is never written.
"""

import argparse
import json
import math
import os
import re
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))

import gen_layouts as gl  # noqa: E402
import ldm_reference as ref  # noqa: E402

UNET_ATTN = ("Transformer2DModel",)
UNET_CONV = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TE_TARGET = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")

DTYPES = {"F16": torch.float16, "F32": torch.float32, "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32,
          "U8": torch.uint8, "F64": torch.float64, "BOOL": torch.bool, "I8": torch.int8, "I16": torch.int16}


def meta_of(path):
    """MODEL's tensors as meta tensors (names, shapes, dtypes), from the header."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return {k: torch.empty(v["shape"], dtype=DTYPES.get(v["dtype"], torch.float16), device="meta") for k, v in header.items()}


def children(model, classes):
    """(path, module) of the Linear / Conv2d modules under modules of `classes`, in order."""
    seen, out = set(), []
    for name, mod in model.named_modules():
        if type(mod).__name__ not in classes:
            continue
        for sub, child in mod.named_modules():
            if isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)) and sub:
                p = f"{name}.{sub}" if name else sub
                if p not in seen:
                    seen.add(p)
                    out.append((p, child))
    return out


def kohya(prefix, path):
    return f"{prefix}_{path}".replace(".", "_")


def ldm_unet_key(path, cfg):
    (k,) = gl.unet_to_ldm({path + ".weight": None}, cfg).keys()
    return k


def text_ldm_shape(ldm, path, prefix, open_clip):
    """MODEL's shape for the transformers CLIP weight `path` (text_model.encoder.layers.N....)."""
    if not open_clip:
        return tuple(ldm[prefix + path + ".weight"].shape)
    m = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", path)
    i, rest = m.groups()
    o = f"{prefix}transformer.resblocks.{i}."
    if rest in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
        s = tuple(ldm[o + "attn.in_proj_weight"].shape)
        assert s[0] % 3 == 0, s
        return (s[0] // 3,) + s[1:]
    table = dict(gl.OPEN_CLIP_LAYER)
    return tuple(ldm[o + table[rest] + ".weight"].shape)


def targets(model_path, conv, te):
    """[(kohya name, weight shape, is 3x3-or-larger conv)] in file order."""
    ldm = meta_of(model_path)
    kind = ref.kind(ldm)
    configs = ref.derive_configs(ldm)
    models = ref.build_models(configs, device="meta")
    ucfg = configs["unet"]
    out = []
    classes = UNET_ATTN + (UNET_CONV if conv else ())
    for path, mod in children(models["unet"], classes):
        lk = ldm_unet_key(path, ucfg)
        shape = tuple(mod.weight.shape)
        have = tuple(ldm[lk].shape) if lk in ldm else None
        if have != shape:
            raise SystemExit(f"{path}: diffusers weight {shape}, MODEL's {lk} is {have}")
        name = kohya("lora_unet", lk[len(ref.UNET_PREFIX) : -len(".weight")] if kind == "sdxl" else path)
        out.append((name, shape, len(shape) == 4 and shape[2:] != (1, 1)))
    if te:
        parts = [("text_encoder", "lora_te1" if kind == "sdxl" else "lora_te")]
        if kind == "sdxl":
            parts.append(("text_encoder_2", "lora_te2"))
        for part, prefix in parts:
            open_clip = kind == "sd2" or part == "text_encoder_2"
            lprefix = {
                "sd1": ref.CLIP_PREFIX,
                "sd2": ref.OPEN_CLIP_PREFIX,
                "sdxl": ref.SDXL_OPEN_CLIP_PREFIX if part == "text_encoder_2" else ref.SDXL_CLIP_PREFIX,
            }[kind]
            for path, mod in children(models[part], TE_TARGET):
                shape = tuple(mod.weight.shape)
                have = text_ldm_shape(ldm, path, lprefix, open_clip)
                if have != shape:
                    raise SystemExit(f"{part}.{path}: transformers weight {shape}, MODEL's is {have}")
                out.append((kohya(prefix, path), shape, False))
    return kind, configs, out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--alpha", type=float, default=None, help="default: rank / 2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--conv", action="store_true", help="also ResnetBlock2D / Down- / Upsample2D modules (LoCon)")
    ap.add_argument("--conv-rank", type=int, default=None, help="rank of 3x3 convs (default: --rank)")
    ap.add_argument("--conv-alpha", type=float, default=None, help="alpha of 3x3 convs (default: --alpha)")
    ap.add_argument("--rel", type=float, default=0.05, help="std(dW) relative to a 1/sqrt(fan_in) weight")
    ap.add_argument("--no-te", action="store_true", help="UNet only (kohya --network_train_unet_only)")
    args = ap.parse_args(argv)
    alpha = args.rank / 2 if args.alpha is None else args.alpha
    crank = args.conv_rank or args.rank
    calpha = alpha if args.conv_alpha is None else args.conv_alpha

    from safetensors.torch import save_file

    t0 = time.time()
    kind, configs, mods = targets(args.model, args.conv, not args.no_te)
    gen = torch.Generator().manual_seed(args.seed)
    tensors = {}
    n_el = 0
    for name, shape, big_conv in mods:
        r, a = (crank, calpha) if big_conv else (args.rank, alpha)
        out_f, in_f = shape[0], shape[1]
        k = tuple(shape[2:])
        fan_in = in_f * (math.prod(k) if k else 1)
        r = min(r, out_f, fan_in)
        down = torch.randn((r, in_f) + k, generator=gen) / math.sqrt(fan_in)
        up_std = args.rel / ((a / r) * math.sqrt(r))
        up = torch.randn((out_f, r) + ((1, 1) if k else ()), generator=gen) * up_std
        tensors[f"{name}.lora_down.weight"] = down.half().contiguous()
        tensors[f"{name}.lora_up.weight"] = up.half().contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(float(a), dtype=torch.float16)
        n_el += down.numel() + up.numel() + 1
    base = {"sd1": "sd_v1", "sd2": "sd_v2", "sdxl": "sdxl_base_v1-0"}[kind]
    md = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(args.rank),
        "ss_network_alpha": str(alpha if alpha != int(alpha) else int(alpha)),
        "ss_base_model_version": base,
        "ss_v2": str(kind == "sd2"),
        "ss_network_args": json.dumps({"conv_dim": str(crank), "conv_alpha": str(calpha)}) if args.conv else "null",
        "ss_training_comment": f"random LoRA from bench/gen_lora.py, seed {args.seed}",
        "ss_output_name": os.path.splitext(os.path.basename(args.out))[0],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".partial"
    save_file(tensors, tmp, metadata=md)
    os.replace(tmp, args.out)
    counts = {}
    for name, _, _ in mods:
        p = name.split("_")[1]
        counts[p] = counts.get(p, 0) + 1
    summary = ", ".join(f"{p} {n}" for p, n in counts.items())
    print(
        f"wrote {args.out}: {kind}, {len(mods)} modules ({summary}), rank {args.rank}, alpha {alpha:g}, "
        f"{n_el:,} elements, {os.path.getsize(args.out):,} bytes in {time.time() - t0:.1f}s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
