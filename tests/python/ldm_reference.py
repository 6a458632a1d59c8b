"""Shared by tests/python/diffusers_ref.py and tests/fixtures/gen_layouts.py:
run diffusers' own single-file converters on an LDM (CompVis) or SGM (SDXL)
state dict and check the result against the diffusers/transformers model it
is meant for.

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
  cond_stage_model. / conditioner. are ignored by the converters (the UNet
  converter reads only model.diffusion_model.*; with >100 model_ema.* keys it
  still takes the non-EMA weights unless extract_ema=True).

SDXL base (SGM layout), as from_single_file converts it
(create_diffusers_clip_model_from_ldm):

* text_encoder: convert_ldm_clip_checkpoint strips
  `conditioner.embedders.0.transformer.` (it is in LDM_CLIP_PREFIX_TO_REMOVE);
  position_ids is dropped as for SD 1.x.
* text_encoder_2 (CLIPTextModelWithProjection): convert_open_clip_checkpoint
  with prefix="conditioner.embedders.1.model.". SD_2_TEXT_ENCODER_KEYS_TO_IGNORE
  names only cond_stage_model.* keys, so every resblock is kept and
  `text_projection` [width, proj] becomes `text_projection.weight` [proj, width]
  (transposed); `logit_scale` disappears. No trimming is needed here.
* from_single_file itself chooses the CLIP-L converter for *both* encoders
  when embedders.0's width equals text_encoder_2's hidden_size (it tests
  position_embedding.shape[-1]); the real 768 vs 1280 never collide, and the
  tiny fixture keeps them different too. Its model-type detection also needs
  `resblocks.9` (xl_base), which a tiny tower lacks: the converters are called
  directly here with explicit configs.
* The UNet converter maps label_emb.0.{0,2} to add_embedding.linear_{1,2} when
  config["addition_embed_type"] == "text_time".
"""

import re
from types import SimpleNamespace

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."
# SDXL base (SGM): CLIP ViT-L and OpenCLIP ViT-bigG.
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer."
SDXL_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

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
        "addition_embed_type",
        "addition_time_embed_dim",
        "projection_class_embeddings_input_dim",
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
# SDXL's second text encoder (CLIPTextModelWithProjection): present only when
# the config / folder has it.
ARCH_FIELDS["text_encoder_2"] = ARCH_FIELDS["text_encoder"] + ["projection_dim"]
OPTIONAL_PARTS = ("text_encoder_2",)
# What a config without the field means (diffusers' defaults).
ARCH_DEFAULTS = {"transformer_layers_per_block": 1}


def arch_value(cfg, field):
    return cfg.get(field, ARCH_DEFAULTS.get(field))


def is_open_clip(ldm):
    """SD 2.x: an OpenCLIP tower under cond_stage_model.model."""
    return any(k.startswith(OPEN_CLIP_PREFIX) for k in ldm)


def is_sdxl(ldm):
    """SDXL base: OpenCLIP bigG under conditioner.embedders.1.model."""
    return any(k.startswith(SDXL_OPEN_CLIP_PREFIX) for k in ldm)


def kind(ldm):
    return "sdxl" if is_sdxl(ldm) else "sd2" if is_open_clip(ldm) else "sd1"


def open_clip_num_resblocks(ldm, prefix=OPEN_CLIP_PREFIX):
    pat = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.")
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
    SD1 (conv proj_in) gets 8 heads per transformer, SD2 and SDXL (linear
    proj_in) get channels/64 heads per level, text encoders get hidden/64
    heads. SDXL also gets text_encoder_2 (all OpenCLIP blocks, with the
    projection), transformer_layers_per_block per level and the "text_time"
    add-embedding, whose addition_time_embed_dim is read off the shapes:
    label_emb.0.0 takes pooled text (text_projection's width) + 6 time ids of
    addition_time_embed_dim each.
    """
    model_kind = kind(ldm)
    sd2, sdxl = model_kind == "sd2", model_kind == "sdxl"
    u = {k[len(UNET_PREFIX):]: v for k, v in ldm.items() if k.startswith(UNET_PREFIX)}
    n_in = _count(u, r"input_blocks\.(\d+)\.")
    levels = _count(u, r"input_blocks\.(\d+)\.0\.op\.weight") + 1
    # n_in = 1 (conv_in) + levels*lpb + (levels-1) downsamplers
    lpb, rem = divmod(n_in - levels, levels)
    if rem:
        raise SystemExit(f"cannot infer layers_per_block from {n_in} input blocks / {levels} levels")
    boc, attn, depths = [], [], []
    for i in range(levels):
        b = 1 + i * (lpb + 1)
        boc.append(int(u[f"input_blocks.{b}.0.out_layers.3.weight"].shape[0]))
        attn.append(f"input_blocks.{b}.1.proj_in.weight" in u)
        depths.append(max(1, _count(u, rf"input_blocks\.{b}\.1\.transformer_blocks\.(\d+)\.")))
    first = next(k for k in sorted(u) if k.endswith("transformer_blocks.0.attn2.to_k.weight"))
    proj_in = u[first.replace("transformer_blocks.0.attn2.to_k.weight", "proj_in.weight")]
    linear = proj_in.ndim == 2
    depth = _count(u, re.escape(first.split("transformer_blocks.")[0]) + r"transformer_blocks\.(\d+)\.")
    unet = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": 128 if sdxl else 96 if sd2 else 64,
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
    if sdxl:
        adm_in = int(u["label_emb.0.0.weight"].shape[1])
        pooled = int(ldm[SDXL_OPEN_CLIP_PREFIX + "text_projection"].shape[1])
        time_dim, rem = divmod(adm_in - pooled, 6)
        if rem or time_dim <= 0:
            raise SystemExit(f"label_emb.0.0 takes {adm_in} inputs: not {pooled} pooled + 6 time embeddings")
        unet.update(
            {
                # SDXL's diffusers config lists a depth per level ([1, 2, 10]);
                # levels without attention get 1 (unused).
                "transformer_layers_per_block": depths,
                "addition_embed_type": "text_time",
                "addition_time_embed_dim": time_dim,
                "projection_class_embeddings_input_dim": adm_in,
            }
        )

    v = {k[len(VAE_PREFIX):]: t for k, t in ldm.items() if k.startswith(VAE_PREFIX)}
    vlevels = _count(v, r"encoder\.down\.(\d+)\.")
    vae = {
        "_class_name": "AutoencoderKL",
        "sample_size": 1024 if sdxl else 768 if sd2 else 512,
        "in_channels": int(v["encoder.conv_in.weight"].shape[1]),
        "out_channels": int(v["decoder.conv_out.weight"].shape[0]),
        "down_block_types": ["DownEncoderBlock2D"] * vlevels,
        "up_block_types": ["UpDecoderBlock2D"] * vlevels,
        "block_out_channels": [int(v[f"encoder.down.{i}.block.0.conv1.weight"].shape[0]) for i in range(vlevels)],
        "layers_per_block": _count(v, r"encoder\.down\.0\.block\.(\d+)\."),
        "latent_channels": int(v["quant_conv.weight"].shape[0]) // 2,
        "scaling_factor": 0.13025 if sdxl else 0.18215,
    }

    if sd2:
        text = _open_clip_text_config(ldm, OPEN_CLIP_PREFIX, drop_last=True)
    else:
        text = _clip_text_config(ldm, (SDXL_CLIP_PREFIX if sdxl else CLIP_PREFIX) + "text_model.")
    out = {"unet": unet, "vae": vae, "text_encoder": text}
    if sdxl:
        out["text_encoder_2"] = _open_clip_text_config(ldm, SDXL_OPEN_CLIP_PREFIX, drop_last=False)
    return out


def _clip_text_config(ldm, p):
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
    # What the sd-v1-5 / sd-2 / sdxl text_encoder/config.json files say.
    text.update({"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "architectures": ["CLIPTextModel"]})
    return text


def _open_clip_text_config(ldm, p, drop_last):
    """SD 2.x (drop_last: diffusers keeps N-1 blocks, no projection) or SDXL's
    text_encoder_2 (all N blocks, CLIPTextModelWithProjection)."""
    hidden = int(ldm[p + "token_embedding.weight"].shape[1])
    text = {
        "vocab_size": int(ldm[p + "token_embedding.weight"].shape[0]),
        "hidden_size": hidden,
        "intermediate_size": int(ldm[p + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
        "projection_dim": int(ldm[p + "text_projection"].shape[1]) if p + "text_projection" in ldm else hidden,
        "num_hidden_layers": open_clip_num_resblocks(ldm, p) - (1 if drop_last else 0),
        "num_attention_heads": hidden // 64,
        "max_position_embeddings": int(ldm[p + "positional_embedding"].shape[0]),
        "hidden_act": "gelu",
    }
    arch = "CLIPTextModel" if drop_last else "CLIPTextModelWithProjection"
    text.update({"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "architectures": [arch]})
    return text


# --------------------------------------------------------------------------
# Models and conversion.
# --------------------------------------------------------------------------


def _init_kwargs(cls, cfg):
    """Drop the keys a config.json carries that __init__ does not take."""
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def build_models(configs, device=None):
    """{"unet", "vae", "text_encoder"[, "text_encoder_2"]} -> models built
    from the config dicts, on `device` ("meta" allocates nothing: enough for
    key/shape checks). text_encoder_2 (SDXL) is a
    CLIPTextModelWithProjection."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    models = {}
    with torch.device(device or "cpu"):
        models["unet"] = UNet2DConditionModel.from_config(configs["unet"])
        models["vae"] = AutoencoderKL.from_config(configs["vae"])
        models["text_encoder"] = CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"]))
        if "text_encoder_2" in configs:
            models["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(configs["text_encoder_2"]))
    return models


def _stub(cfg):
    # convert_open_clip_checkpoint only reads text_model.config.hidden_size
    # (and only when text_projection is absent).
    return SimpleNamespace(config=SimpleNamespace(hidden_size=cfg["hidden_size"]))


def convert(ldm, configs):
    """{"unet", "vae", "text_encoder"[, "text_encoder_2"]} -> diffusers-layout
    state dicts, by diffusers' own converters, with the quirks in the module
    docstring applied. Nothing is checked here; see check_against()."""
    from diffusers.loaders import single_file_utils as sfu

    out = {
        "unet": sfu.convert_ldm_unet_checkpoint(ldm, dict(configs["unet"])),
        "vae": sfu.convert_ldm_vae_checkpoint(ldm, dict(configs["vae"])),
    }
    if is_sdxl(ldm):
        if "text_encoder_2" not in configs:
            raise SystemExit("SDXL checkpoint: the configs have no text_encoder_2")
        text = sfu.convert_ldm_clip_checkpoint(ldm)
        text.pop(CLIP_POSITION_IDS, None)
        out["text_encoder"] = text
        out["text_encoder_2"] = sfu.convert_open_clip_checkpoint(
            _stub(configs["text_encoder_2"]), ldm, prefix=SDXL_OPEN_CLIP_PREFIX
        )
        return out
    if is_open_clip(ldm):
        n = open_clip_num_resblocks(ldm)
        last = f"{OPEN_CLIP_PREFIX}transformer.resblocks.{n - 1}."
        trimmed = {k: t for k, t in ldm.items() if not k.startswith(last)}
        text = sfu.convert_open_clip_checkpoint(_stub(configs["text_encoder"]), trimmed, prefix=OPEN_CLIP_PREFIX)
    else:
        text = sfu.convert_ldm_clip_checkpoint(ldm)
        text.pop(CLIP_POSITION_IDS, None)
    out["text_encoder"] = text
    return out


def check_against(converted, models):
    """Raise SystemExit unless each converted dict has exactly the model's
    state_dict keys with the same shapes (and the same set of parts)."""
    problems = []
    if set(converted) != set(models):
        problems.append(f"parts: converted {sorted(converted)}, models {sorted(models)}")
    for name, model in models.items():
        want = model.state_dict()
        got = converted.get(name, {})
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
