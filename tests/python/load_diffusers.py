#!/usr/bin/env python3
"""Check that a diffusers-layout folder loads the way diffusers/transformers load it.

    $(tests/python/venv.sh) tests/python/load_diffusers.py FOLDER [--config CONFIG_JSON]

Loads FOLDER/unet (UNet2DConditionModel), FOLDER/vae (AutoencoderKL),
FOLDER/text_encoder (CLIPTextModel) and, when the folder has it (SDXL),
FOLDER/text_encoder_2 (CLIPTextModelWithProjection) with
from_pretrained(..., subfolder=...), offline and from local files only, with
output_loading_info=True. Any missing, unexpected or mismatched key, or any
load error, fails; so does a UNet with the SDXL "text_time" add-embedding but
no text_encoder_2. Then runs one tiny float32 forward pass per model and
checks the outputs are finite. With text_encoder_2 the UNet is run the way
the SDXL pipeline runs it: context = both encoders' hidden states
concatenated, text_embeds = text_encoder_2's pooled projection, 6 time ids;
so the widths must fit together (cross_attention_dim, and
projection_class_embeddings_input_dim = projection_dim +
6 * addition_time_embed_dim).

With --config (JSON {"unet", "vae", "text_encoder"[, "text_encoder_2"]}, as
written by tests/fixtures/gen_layouts.py), the loaded configs must also agree
with it on the architecture-defining fields (ldm_reference.ARCH_FIELDS), and
text_encoder_2 must be in both or in neither. An int and a per-block list
that expands to it count as equal (diffusers broadcasts attention_head_dim,
cross_attention_dim, layers_per_block and transformer_layers_per_block that
way).

One check is stricter than from_pretrained: the tensor names stored in the
subfolder's *.safetensors files must be exactly the model's state_dict keys.
diffusers 0.35.2 silently renames the deprecated VAE attention names
(query/key/value/proj_attn -> to_q/to_k/to_v/to_out.0, in
ModelMixin._fix_state_dict_keys_on_load) and reports nothing, so without this
check an old-layout VAE would pass. The one name allowed beyond the
state_dict is text_model.embeddings.position_ids in text_encoder(_2): a
non-persistent buffer that transformers drops silently (older
save_pretrained versions wrote it, as do the sd-v1-5 repo files).

Prints "ok" and exits 0, or prints one line saying what failed and exits 1.
"""

import os

# Before importing huggingface_hub / diffusers / transformers: never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldm_reference as ref  # noqa: E402


class Failure(Exception):
    pass


def check_info(part, info):
    problems = []
    for field in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        items = list(info.get(field) or [])
        if items:
            problems.append(f"{field} ({len(items)}): {', '.join(map(str, items[:3]))}")
    if problems:
        raise Failure(f"{part}: " + "; ".join(problems))


def load(folder):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    common = {"local_files_only": True, "output_loading_info": True}
    models = {}
    parts = [
        ("unet", UNet2DConditionModel),
        ("vae", AutoencoderKL),
        ("text_encoder", CLIPTextModel),
        ("text_encoder_2", CLIPTextModelWithProjection),
    ]
    for part, cls in parts:
        if not os.path.isdir(os.path.join(folder, part)):
            if part in ref.OPTIONAL_PARTS:
                continue
            raise Failure(f"{part}: no folder {os.path.join(folder, part)}")
        try:
            model, info = cls.from_pretrained(folder, subfolder=part, **common)
        except Exception as e:  # noqa: BLE001 - any load error is a test failure
            msg = " ".join(str(e).split())
            raise Failure(f"{part}: {type(e).__name__}: {msg[:500]}") from None
        check_info(part, info)
        check_stored_names(part, os.path.join(folder, part), model)
        models[part] = model.float().eval()
    if models["unet"].config.addition_embed_type == "text_time" and "text_encoder_2" not in models:
        raise Failure(f"text_encoder_2: no folder {os.path.join(folder, 'text_encoder_2')} for an SDXL (text_time) unet")
    return models


def check_stored_names(part, subdir, model):
    from safetensors import safe_open

    files = sorted(f for f in os.listdir(subdir) if f.endswith(".safetensors"))
    if not files:
        return  # .bin weights: from_pretrained's own checks are all we have
    stored = set()
    for f in files:
        with safe_open(os.path.join(subdir, f), framework="pt") as sf:
            stored.update(sf.keys())
    want = set(model.state_dict())
    extra = sorted(stored - want - ({ref.CLIP_POSITION_IDS} if part.startswith("text_encoder") else set()))
    missing = sorted(want - stored)
    if extra or missing:
        raise Failure(
            f"{part}: stored names differ from the model's state_dict: "
            f"{len(extra)} not in the model (e.g. {', '.join(extra[:3])}), "
            f"{len(missing)} absent (e.g. {', '.join(missing[:3])})"
        )


def forward(models):
    g = torch.Generator().manual_seed(0)
    unet, vae, text = models["unet"], models["vae"], models["text_encoder"]
    text2 = models.get("text_encoder_2")
    outputs = []
    with torch.no_grad():
        tc = text.config
        ids = torch.randint(0, tc.vocab_size, (1, 8), generator=g)
        h = text(input_ids=ids).last_hidden_state
        if tuple(h.shape) != (1, 8, tc.hidden_size):
            raise Failure(f"text_encoder: output shape {tuple(h.shape)}")
        outputs.append(("text_encoder", h))
        if text2 is not None:
            tc2 = text2.config
            ids2 = torch.randint(0, tc2.vocab_size, (1, 8), generator=g)
            out2 = text2(input_ids=ids2)
            h2, pooled = out2.last_hidden_state, out2.text_embeds
            if tuple(h2.shape) != (1, 8, tc2.hidden_size) or tuple(pooled.shape) != (1, tc2.projection_dim):
                raise Failure(f"text_encoder_2: output shapes {tuple(h2.shape)}, {tuple(pooled.shape)}")
            outputs += [("text_encoder_2", h2), ("text_encoder_2 text_embeds", pooled)]

        uc = unet.config
        # 2x2 at the deepest level: GroupNorm(32) over 32 channels needs more
        # than one value per group.
        side = 2 ** len(uc.block_out_channels)
        ctx_dim = uc.cross_attention_dim
        ctx_dim = ctx_dim[0] if isinstance(ctx_dim, (list, tuple)) else ctx_dim
        x = torch.randn(1, uc.in_channels, side, side, generator=g)
        kwargs = {}
        if text2 is not None:
            # As StableDiffusionXLPipeline: penultimate-layer choice aside,
            # context = [CLIP-L, bigG] hidden states, pooled bigG projection.
            ctx = torch.cat([h, h2], dim=-1)
            if ctx.shape[-1] != ctx_dim:
                raise Failure(
                    f"unet: cross_attention_dim {ctx_dim} != text_encoder {tc.hidden_size} + "
                    f"text_encoder_2 {tc2.hidden_size}"
                )
        else:
            ctx = torch.randn(1, 8, ctx_dim, generator=g)
        if uc.addition_embed_type == "text_time":
            n_time = 6  # original size, crop top-left, target size
            want = pooled.shape[-1] + n_time * uc.addition_time_embed_dim
            if uc.projection_class_embeddings_input_dim != want:
                raise Failure(
                    f"unet: projection_class_embeddings_input_dim {uc.projection_class_embeddings_input_dim} != "
                    f"text_encoder_2 projection_dim {pooled.shape[-1]} + {n_time} * addition_time_embed_dim "
                    f"{uc.addition_time_embed_dim}"
                )
            time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]])
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": time_ids}
        y = unet(x, torch.tensor([10]), encoder_hidden_states=ctx, **kwargs).sample
        if tuple(y.shape) != (1, uc.out_channels, side, side):
            raise Failure(f"unet: output shape {tuple(y.shape)}")

        vc = vae.config
        side = 2 ** (len(vc.block_out_channels) - 1)
        img = torch.randn(1, vc.in_channels, side * 2, side * 2, generator=g)
        z = vae.encode(img).latent_dist.mean
        if tuple(z.shape) != (1, vc.latent_channels, 2, 2):
            raise Failure(f"vae: latent shape {tuple(z.shape)}")
        rec = vae.decode(z).sample
        if tuple(rec.shape) != tuple(img.shape):
            raise Failure(f"vae: decoded shape {tuple(rec.shape)}")
    for name, t in outputs + [("unet", y), ("vae", rec)]:
        if not torch.isfinite(t).all():
            raise Failure(f"{name}: non-finite forward output")


def _agree(loaded, want, n):
    """Equal, with tuples as lists and a scalar broadcast to n entries when
    the other side is a list."""
    a = list(loaded) if isinstance(loaded, (list, tuple)) else loaded
    b = list(want) if isinstance(want, (list, tuple)) else want
    if isinstance(a, list) != isinstance(b, list):
        a = a if isinstance(a, list) else [a] * n
        b = b if isinstance(b, list) else [b] * n
    return a == b


def check_configs(models, path):
    with open(path) as f:
        want = json.load(f)
    for part, fields in ref.ARCH_FIELDS.items():
        if part in ref.OPTIONAL_PARTS and part not in want and part not in models:
            continue
        if part not in want:
            raise Failure(f"--config: no {part!r} section")
        if part not in models:
            raise Failure(f"{part}: in --config but not in the folder")
        cfg = models[part].config
        got = cfg.to_dict() if hasattr(cfg, "to_dict") and not isinstance(cfg, dict) else dict(cfg)
        n = len(got.get("block_out_channels") or [1])
        for field in fields:
            if field not in want[part] and field not in ref.ARCH_DEFAULTS:
                continue
            w = ref.arch_value(want[part], field)
            if field not in got:
                raise Failure(f"{part}.{field}: missing from the loaded config (expected {w!r})")
            if not _agree(got[field], w, n):
                raise Failure(f"{part}.{field}: loaded {got[field]!r}, expected {w!r}")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--config", help="JSON {unet, vae, text_encoder[, text_encoder_2]} configs to compare against")
    args = ap.parse_args(argv)

    # Keep stdout to the one result line; library chatter goes nowhere.
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        models = load(args.folder)
        if args.config:
            check_configs(models, args.config)
        forward(models)
    except Failure as e:
        print(f"FAIL {e}")
        return 1
    except Exception as e:  # noqa: BLE001 - e.g. a forward pass that raises
        msg = " ".join(str(e).split())
        print(f"FAIL {type(e).__name__}: {msg[:500]}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
