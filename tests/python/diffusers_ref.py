#!/usr/bin/env python3
"""Reference LDM -> diffusers conversion, by diffusers' own converters.

    $(tests/python/venv.sh) tests/python/diffusers_ref.py LDM_FILE OUT_DIR [--config CONFIG_JSON]

LDM_FILE is a single-file SD 1.x / 2.x checkpoint in the original CompVis
layout, or an SDXL base checkpoint in the original SGM layout: .safetensors,
or a torch .ckpt/.pt (loaded with weights_only=True; a top-level
"state_dict" is unwrapped). SD2 is recognised by its OpenCLIP text tower
(cond_stage_model.model.*), SDXL by its second, OpenCLIP bigG one
(conditioner.embedders.1.model.*).

Writes what ldmkit's `convert` output is compared against:

    OUT_DIR/unet/diffusion_pytorch_model.safetensors
    OUT_DIR/vae/diffusion_pytorch_model.safetensors
    OUT_DIR/text_encoder/model.safetensors
    OUT_DIR/text_encoder_2/model.safetensors      (SDXL only)

plus a config.json next to each (so OUT_DIR loads with load_diffusers.py).
Tensors keep the file's dtypes, are contiguous and share no storage;
safetensors metadata is {"format": "pt"} as save_pretrained writes.

The converters need configs: --config takes a JSON file of the form
{"unet": {...}, "vae": {...}, "text_encoder": {...}} (SDXL: also
"text_encoder_2"; as written by tests/fixtures/gen_layouts.py); without it they are derived from the tensor
shapes (tests/python/ldm_reference.py: derive_configs). Either way the
converted dicts must have exactly the keys and shapes of the models those
configs build (checked on the meta device, so real-size files need no extra
memory for models), else exit 1. The conversion quirks that are accepted
(position_ids, the dropped last OpenCLIP block and text_projection of SD2,
logit_scale) are listed in ldm_reference.py.
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldm_reference as ref  # noqa: E402

OUT_FILES = {
    "unet": "unet/diffusion_pytorch_model.safetensors",
    "vae": "vae/diffusion_pytorch_model.safetensors",
    "text_encoder": "text_encoder/model.safetensors",
    "text_encoder_2": "text_encoder_2/model.safetensors",
}


def load_ldm(path):
    if path.endswith(".safetensors"):
        return load_file(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise SystemExit(f"{path}: not a state dict ({type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def save_component(tensors, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    # clone(): the converters return views/aliases of the input tensors in
    # places (and .ckpt inputs may share storages); safetensors refuses those.
    plain = {k: v.detach().contiguous().clone() for k, v in sorted(tensors.items())}
    save_file(plain, path, metadata={"format": "pt"})


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ldm_file")
    ap.add_argument("out_dir")
    ap.add_argument(
        "--config", help="JSON {unet, vae, text_encoder[, text_encoder_2]} configs (default: derived from shapes)"
    )
    args = ap.parse_args(argv)

    ldm = load_ldm(args.ldm_file)
    if not any(k.startswith(ref.UNET_PREFIX) for k in ldm):
        raise SystemExit(f"{args.ldm_file}: no {ref.UNET_PREFIX}* keys; not an LDM-layout SD checkpoint")
    if args.config:
        with open(args.config) as f:
            configs = json.load(f)
    else:
        try:
            configs = ref.derive_configs(ldm)
        except (KeyError, StopIteration) as e:
            raise SystemExit(f"{args.ldm_file}: cannot derive configs from the tensors (missing {e}); pass --config")

    kind = ref.kind(ldm)
    if (kind == "sdxl") != ("text_encoder_2" in configs):
        raise SystemExit(f"{args.ldm_file}: a {kind} checkpoint, but the configs have parts {sorted(configs)}")
    converted = ref.convert(ldm, configs)
    models = ref.build_models(configs, device="meta")
    ref.check_against(converted, models)

    for part, model in models.items():
        path = os.path.join(args.out_dir, OUT_FILES[part])
        save_component(converted[part], path)
        with open(os.path.join(os.path.dirname(path), "config.json"), "w") as f:
            if part.startswith("text_encoder"):
                cfg = model.config.to_dict()
            else:
                cfg = json.loads(model.to_json_string())
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
    counts = ", ".join(f"{p} {len(converted[p])}" for p in models)
    print(f"{kind}: {counts} tensors -> {args.out_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
