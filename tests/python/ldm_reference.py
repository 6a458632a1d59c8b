"""Shared by tests/python/diffusers_ref.py and tests/fixtures/gen_layouts.py:
run diffusers' own single-file converters on an LDM (CompVis) state dict and
check the result against the diffusers/transformers model it is meant for.

diffusers 0.35.2's converters (diffusers.loaders.single_file_utils) are the
reference. Where their output does not load as-is into the model, the reason
is a known quirk; each is handled here, in one place, and nothing else is
forgiven:

* convert_ldm_clip_checkpoint keeps `text_model.embeddings.position_ids`
  (int64 [1,77]) when the LDM file carries it (sd-v1-5 does). transformers
  registers that buffer with persistent=False, so it is not part of
  CLIPTextModel's state_dict: from_pretrained drops it silently and
  save_pretrained never writes it. It is dropped here too.
* convert_open_clip_checkpoint skips a hard-coded list of keys
  (SD_2_TEXT_ENCODER_KEYS_TO_IGNORE): `resblocks.23.*` and `text_projection`.
  That is "drop the last resblock" only for the real 24-block OpenCLIP-H
  tower (diffusers' text encoder uses the penultimate layer, so its config
  has num_hidden_layers = 23). For a tower of N blocks the equivalent is
  dropping `resblocks.{N-1}.*`, done here before calling the converter.
  `logit_scale` is not mapped by the converter at all, so it disappears.
* The OpenCLIP converter splits attn.in_proj_{weight,bias} into q/k/v at
  text_projection.shape[0] (the tower width), or at config.hidden_size when
  the file has no text_projection.
* The LDM schedule buffers (betas, alphas_cumprod, ...), `model_ema.*` and
  anything else outside model.diffusion_model. / first_stage_model. /
  cond_stage_model. are ignored by the converters (the UNet converter reads
  only model.diffusion_model.*; with >100 model_ema.* keys it still takes the
  non-EMA weights unless extract_ema=True).
"""

import re
from types import SimpleNamespace

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."

# transformers' CLIPTextEmbeddings.position_ids (persistent=False).
CLIP_POSITION_IDS = "text_model.embeddings.position_ids"

# Fields that define the architecture (and so the weight shapes/names);
# load_diffusers.py --config compares these.
ARCH_FIELDS = {
    "unet": [
        "in_channels",
        "out_channels",
        "down_block_types",
        "up_block_types",
        "block_out_channels",
        "layers_per_block",
        "cross_attention_dim",
        "attention_head_dim",
        "use_linear_projection",
        "transformer_layers_per_block",
    ],
    "vae": [
        "in_channels",
        "out_channels",
        "down_block_types",
        "up_block_types",
        "block_out_channels",
        "layers_per_block",
        "latent_channels",
    ],
    "text_encoder": [
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "vocab_size",
        "max_position_embeddings",
    ],
}


def is_open_clip(ldm):
    return any(k.startswith(OPEN_CLIP_PREFIX) for k in ldm)


def open_clip_num_resblocks(ldm):
    pat = re.compile(re.escape(OPEN_CLIP_PREFIX) + r"transformer\.resblocks\.(\d+)\.")
    ids = {int(m.group(1)) for k in ldm for m in [pat.match(k)] if m}
    if not ids or ids != set(range(max(ids) + 1)):
        raise SystemExit(f"OpenCLIP resblocks are not 0..N-1: {sorted(ids)}")
    return len(ids)


# --------------------------------------------------------------------------
# Config derivation from tensor shapes (used when no --config is given).
# --------------------------------------------------------------------------


def _count(keys, pattern):
    pat = re.compile(pattern)
    return len({m.group(1) for k in keys for m in [pat.match(k)] if m})


def derive_configs(ldm):
    """diffusers/transformers config dicts for the models in an LDM dict.

    Mirrors what diffusers' create_*_diffusers_config_from_ldm would produce
    from the original yaml, reading the numbers off the tensors instead:
    SD1 (conv proj_in) gets 8 heads per transformer, SD2 (linear proj_in)
    gets channels/64 heads, text encoders get hidden/64 heads.
    """
    sd2 = is_open_clip(ldm)
    u = {k[len(UNET_PREFIX):]: v for k, v in ldm.items() if k.startswith(UNET_PREFIX)}
    n_in = _count(u, r"input_blocks\.(\d+)\.")
    levels = _count(u, r"input_blocks\.(\d+)\.0\.op\.weight") + 1
    # n_in = 1 (conv_in) + levels*lpb + (levels-1) downsamplers
    lpb, rem = divmod(n_in - levels, levels)
    if rem:
        raise SystemExit(f"cannot infer layers_per_block from {n_in} input blocks / {levels} levels")
    boc, attn = [], []
    for i in range(levels):
        b = 1 + i * (lpb + 1)
        boc.append(int(u[f"input_blocks.{b}.0.out_layers.3.weight"].shape[0]))
        attn.append(f"input_blocks.{b}.1.proj_in.weight" in u)
    first = next(k for k in sorted(u) if k.endswith("transformer_blocks.0.attn2.to_k.weight"))
    proj_in = u[first.replace("transformer_blocks.0.attn2.to_k.weight", "proj_in.weight")]
    linear = proj_in.ndim == 2
    depth = _count(u, re.escape(first.split("transformer_blocks.")[0]) + r"transformer_blocks\.(\d+)\.")
    unet = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 96 if sd2 else 64,
        "in_channels": int(u["input_blocks.0.0.weight"].shape[1]),
        "out_channels": int(u["out.2.weight"].shape[0]),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "block_out_channels": boc,
        "layers_per_block": lpb,
        "cross_attention_dim": int(u[first].shape[1]),
        "attention_head_dim": [c // 64 for c in boc] if linear else 8,
        "use_linear_projection": linear,
        "transformer_layers_per_block": depth,
    }

    v = {k[len(VAE_PREFIX):]: t for k, t in ldm.items() if k.startswith(VAE_PREFIX)}
    vlevels = _count(v, r"encoder\.down\.(\d+)\.")
    vae = {
        "_class_name": "AutoencoderKL",
        "sample_size": 768 if sd2 else 512,
        "in_channels": int(v["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(v["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * vlevels,
        "up_block_types": ["UpDecoderBlock2D"] * vlevels,
        "block_out_channels": [int(v[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(vlevels)],
        "layers_per_block": _count(v, r"encoder\.down\.0\.block\.(\d+)\."),
        "latent_channels": int(v["quant_conv.weight"].shape[0]) // 2,
        "scaling_factor": 0.18215,
    }

    if sd2:
        p = OPEN_CLIP_PREFIX
        hidden = int(ldm[p + "token_embedding.weight"].shape[1])
        text = {
            "vocab_size": int(ldm[p + "token_embedding.weight"].shape[0]),
            "hidden_size": hidden,
            "intermediate_size": int(ldm[p + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
            "projection_dim": int(ldm[p + "text_projection"].shape[1]) if p + "text_projection" in ldm else hidden,
            "num_hidden_layers": open_clip_num_resblocks(ldm) - 1,
            "num_attention_heads": hidden // 64,
            "max_position_embeddings": int(ldm[p + "positional_embedding"].shape[0]),
            "hidden_act": "gelu",
        }
    else:
        p = CLIP_PREFIX + "text_model."
        tok = ldm[p + "embeddings.token_embedding.weight"]
        hidden = int(tok.shape[1])
        text = {
            "vocab_size": int(tok.shape[0]),
            "hidden_size": hidden,
            "intermediate_size": int(ldm[p + "encoder.layers.0.mlp.fc1.weight"].shape[0]),
            "projection_dim": 768,
            "num_hidden_layers": _count(ldm, re.escape(p) + r"encoder\.layers\.(\d+)\."),
            "num_attention_heads": hidden // 64,
            "max_position_embeddings": int(ldm[p + "embeddings.position_embedding.weight"].shape[0]),
            "hidden_act": "quick_gelu",
        }
    # What the sd-v1-5 / sd-2 text_encoder/config.json files say.
    text.update({"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "architectures": ["CLIPTextModel"]})
    return {"unet": unet, "vae": vae, "text_encoder": text}


# --------------------------------------------------------------------------
# Models and conversion.
# --------------------------------------------------------------------------


def _init_kwargs(cls, cfg):
    """Drop the keys a config.json carries that __init__ does not take."""
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def build_models(configs, device=None):
    """(unet, vae, text_encoder) built from config dicts, on `device`
    ("meta" allocates nothing: enough for key/shape checks)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device or "cpu"):
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        text = CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"]))
    return unet, vae, text


def convert(ldm, configs):
    """{"unet", "vae", "text_encoder"} -> diffusers-layout state dicts, by
    diffusers' own converters, with the quirks in the module docstring
    applied. Nothing is checked here; see check_against()."""
    from diffusers.loaders import single_file_utils as sfu

    out = {
        "unet": sfu.convert_ldm_unet_checkpoint(ldm, dict(configs["unet"])),
        "vae": sfu.convert_ldm_vae_checkpoint(ldm, dict(configs["vae"])),
    }
    if is_open_clip(ldm):
        n = open_clip_num_resblocks(ldm)
        last = f"{OPEN_CLIP_PREFIX}transformer.resblocks.{n - 1}."
        trimmed = {k: t for k, t in ldm.items() if not k.startswith(last)}
        # The converter only reads text_model.config.hidden_size (and only
        # when text_projection is absent).
        stub = SimpleNamespace(config=SimpleNamespace(hidden_size=configs["text_encoder"]["hidden_size"]))
        text = sfu.convert_open_clip_checkpoint(stub, trimmed, prefix=OPEN_CLIP_PREFIX)
    else:
        text = sfu.convert_ldm_clip_checkpoint(ldm)
        text.pop(CLIP_POSITION_IDS, None)
    out["text_encoder"] = text
    return out


def check_against(converted, models):
    """Raise SystemExit unless each converted dict has exactly the model's
    state_dict keys with the same shapes."""
    problems = []
    for name, model in zip(("unet", "vae", "text_encoder"), models):
        want = model.state_dict()
        got = converted[name]
        missing = sorted(set(want) - set(got))
        unexpected = sorted(set(got) - set(want))
        if missing:
            problems.append(f"{name}: {len(missing)} missing, e.g. {missing[:5]}")
        if unexpected:
            problems.append(f"{name}: {len(unexpected)} unexpected, e.g. {unexpected[:5]}")
        bad = [
            f"{k} {tuple(got[k].shape)} != {tuple(want[k].shape)}"
            for k in sorted(set(want) & set(got))
            if tuple(got[k].shape) != tuple(want[k].shape)
        ]
        if bad:
            problems.append(f"{name}: {len(bad)} shape mismatches, e.g. {bad[:3]}")
    if problems:
        raise SystemExit("diffusers conversion does not match the model:\n  " + "\n  ".join(problems))
