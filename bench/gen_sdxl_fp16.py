#!/usr/bin/env python3
"""Write a full-size SDXL base 1.0 (or SD 1.5) single-file checkpoint in fp16
with random values, streamed tensor by tensor.

    PY=$(tests/python/venv.sh | tail -1)
    $PY bench/gen_sdxl_fp16.py bench/out/sdxl-base-fp16.safetensors          # ~6.94 GB, SDXL base 1.0
    $PY bench/gen_sdxl_fp16.py --arch sd15 bench/out/sd1-release.safetensors # ~2.13 GB, SD 1.5
    $PY bench/gen_sdxl_fp16.py --dry-run OUT    # names, shapes, counts only; writes nothing

Names and shapes are those of sd_xl_base_1.0.safetensors (SGM layout):
model.diffusion_model.* (UNet, LDM block names), first_stage_model.* (VAE),
conditioner.embedders.0.transformer.text_model.* (CLIP ViT-L, transformers
names, int64 position_ids [1, 77]) and conditioner.embedders.1.model.*
(OpenCLIP ViT-bigG: 32 resblocks, width 1280, attn.in_proj_weight
[3840, 1280], text_projection [1280, 1280], logit_scale). With --arch sd15:
v1-5-pruned(-emaonly)'s model.diffusion_model.*, first_stage_model.*,
cond_stage_model.transformer.text_model.* and the 12 float32 DDPM schedule
buffers (betas ... posterior_mean_coef2, real linear-schedule values).

How: the diffusers / transformers configs below build the models on the
meta device (no memory); their state-dict names are mapped to LDM/SGM names
with tests/fixtures/gen_layouts.py's inverse mappings (unet_to_ldm,
vae_to_ldm, clip_to_ldm, open_clip_to_ldm). Before anything is written,
diffusers 0.35.2's own single-file converters (tests/python/ldm_reference.py
convert + check_against, on the meta tensors) must turn the LDM names back
into exactly the models' state dicts, and derive_configs must read the same
architecture back off the shapes. Then the safetensors header is written and
each tensor is generated (seeded torch.randn: weights N(0, 1/fan_in), norm
weights 1 + 0.1 N, biases 0.02 N; rounded to float16) and appended, so peak
RSS is one tensor (~0.4 GB for the 49408 x 1280 token embedding), not the
model. Written to OUT.partial, renamed at the end.
"""

import argparse
import json
import math
import os
import resource
import struct
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))

import gen_layouts as gl  # noqa: E402
import ldm_reference as ref  # noqa: E402

# --------------------------------------------------------------------------
# Configs (stabilityai/stable-diffusion-xl-base-1.0 and
# stable-diffusion-v1-5 unet/vae/text_encoder(_2)/config.json, the fields
# that matter for the weights).
# --------------------------------------------------------------------------


def clip_l():
    return {
        "vocab_size": 49408,
        "hidden_size": 768,
        "intermediate_size": 3072,
        "projection_dim": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "architectures": ["CLIPTextModel"],
    }


def clip_bigg():
    return {
        "vocab_size": 49408,
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "projection_dim": 1280,
        "num_hidden_layers": 32,
        "num_attention_heads": 20,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
        "architectures": ["CLIPTextModelWithProjection"],
    }


def vae(sample_size, scaling_factor):
    return {
        "_class_name": "AutoencoderKL",
        "sample_size": sample_size,
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 32,
        "act_fn": "silu",
        "scaling_factor": scaling_factor,
    }


CONFIGS = {
    "sdxl": {
        "unet": {
            "_class_name": "UNet2DConditionModel",
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "block_out_channels": [320, 640, 1280],
            "layers_per_block": 2,
            "cross_attention_dim": 2048,
            "attention_head_dim": [5, 10, 20],
            "use_linear_projection": True,
            "transformer_layers_per_block": [1, 2, 10],
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
            "norm_num_groups": 32,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        },
        "vae": vae(1024, 0.13025),
        "text_encoder": clip_l(),
        "text_encoder_2": clip_bigg(),
    },
    "sd15": {
        "unet": {
            "_class_name": "UNet2DConditionModel",
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "use_linear_projection": False,
            "norm_num_groups": 32,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        },
        "vae": vae(512, 0.18215),
        "text_encoder": clip_l(),
    },
}

# What the real files hold (sd_xl_base_1.0.safetensors: 2,515 tensors,
# 6,938,078,334 bytes; UNet 1,680, VAE 248, CLIP-L 197 with position_ids,
# bigG 390 with text_projection and logit_scale). SD 1.5: UNet 686, VAE 248,
# CLIP-L 197, + 12 schedule buffers.
EXPECTED_KEYS = {
    "sdxl": {"model.diffusion_model.": 1680, "first_stage_model.": 248, ref.SDXL_CLIP_PREFIX: 197, ref.SDXL_OPEN_CLIP_PREFIX: 390},
    "sd15": {"model.diffusion_model.": 686, "first_stage_model.": 248, ref.CLIP_PREFIX: 197},
}

ST_DTYPE = {torch.float16: "F16", torch.float32: "F32", torch.int64: "I64", torch.bfloat16: "BF16"}


def meta_ldm(arch):
    """OrderedDict LDM name -> tensor: meta tensors for everything random,
    real tensors for position_ids, logit_scale and the schedule buffers."""
    configs = CONFIGS[arch]
    models = ref.build_models(configs, device="meta")
    sds = {part: m.state_dict() for part, m in models.items()}
    ldm = {}
    ldm.update(gl.unet_to_ldm(sds["unet"], configs["unet"]))
    ldm.update(gl.vae_to_ldm(sds["vae"], configs["vae"]))
    te = {k: v for k, v in sds["text_encoder"].items() if k != ref.CLIP_POSITION_IDS}
    if arch == "sdxl":
        ldm.update(gl.clip_to_ldm(te, 77, prefix=ref.SDXL_CLIP_PREFIX))
        t2 = configs["text_encoder_2"]
        ldm.update(gl.open_clip_to_ldm(sds["text_encoder_2"], t2["num_hidden_layers"], None, p=ref.SDXL_OPEN_CLIP_PREFIX))
    else:
        ldm.update(gl.clip_to_ldm(te, 77))
        ldm.update(gl.schedule_buffers())
    return ldm, models, configs


def validate(arch, ldm, models, configs):
    """diffusers' converters must map the names back onto the models exactly;
    derive_configs must read the architecture back; key counts as the real file."""
    conv = ref.convert(ldm, configs)
    ref.check_against(conv, models)
    derived = ref.derive_configs(ldm)
    for part, fields in ref.ARCH_FIELDS.items():
        if part not in configs:
            continue
        for f in fields:
            want, got = ref.arch_value(configs[part], f), ref.arch_value(derived[part], f)
            if want != got:
                raise SystemExit(f"{part}.{f}: derived {got!r} != {want!r}")
    counts = {p: sum(1 for k in ldm if k.startswith(p)) for p in EXPECTED_KEYS[arch]}
    if counts != EXPECTED_KEYS[arch]:
        raise SystemExit(f"key counts {counts}, expected {EXPECTED_KEYS[arch]}")
    return counts


def values(name, t, gen):
    """The tensor to write: real ones as they are, random ones generated."""
    if t.device.type != "meta":
        return t.to(torch.float16) if t.is_floating_point() and t.dtype != torch.float32 else t
    r = torch.randn(t.shape, generator=gen, dtype=torch.float32)
    if name.endswith(".bias"):
        r.mul_(0.02)
    elif t.ndim == 1:  # norm weights
        r.mul_(0.1).add_(1.0)
    else:
        r.mul_(1.0 / math.sqrt(t[0].numel()))
    return r.to(torch.float16)


def out_dtype(name, t):
    if t.device.type != "meta":
        # schedule buffers stay float32 (as in the SD 1.x releases), position_ids int64
        return t.dtype if t.dtype in (torch.float32, torch.int64) else torch.float16
    return torch.float16


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--arch", choices=sorted(CONFIGS), default="sdxl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="validate and print counts; write nothing")
    args = ap.parse_args(argv)

    t0 = time.time()
    ldm, models, configs = meta_ldm(args.arch)
    counts = validate(args.arch, ldm, models, configs)
    names = sorted(ldm)
    header, off = {}, 0
    elements = 0
    for k in names:
        t = ldm[k]
        dt = out_dtype(k, t)
        n = t.numel() * torch.tensor([], dtype=dt).element_size()
        header[k] = {"dtype": ST_DTYPE[dt], "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
        elements += t.numel()
    meta = {"__metadata__": {"format": "pt"}}
    hbytes = json.dumps({**meta, **header}, separators=(",", ":")).encode()
    hbytes += b" " * (-(8 + len(hbytes)) % 8)
    total = 8 + len(hbytes) + off
    summary = ", ".join(f"{p.rstrip('.')} {n}" for p, n in counts.items())
    print(
        f"{args.arch}: {len(names)} tensors ({summary}), {elements:,} elements, file {total:,} bytes "
        f"(validated in {time.time() - t0:.1f}s)",
        file=sys.stderr,
    )
    if args.dry_run:
        return

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".partial"
    gen = torch.Generator().manual_seed(args.seed)
    t1 = time.time()
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for k in names:
            v = values(k, ldm[k], gen).to(out_dtype(k, ldm[k])).contiguous()
            assert list(v.shape) == header[k]["shape"], k
            buf = v.reshape(-1).view(torch.uint8).numpy() if v.numel() else b""
            assert len(buf) == header[k]["data_offsets"][1] - header[k]["data_offsets"][0], k
            f.write(buf)
            del v, buf
    os.replace(tmp, args.out)
    size = os.path.getsize(args.out)
    assert size == total, (size, total)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"wrote {args.out}: {size:,} bytes in {time.time() - t1:.1f}s; peak RSS {rss / 1024:.0f} MiB", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
