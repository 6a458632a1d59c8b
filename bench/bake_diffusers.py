#!/usr/bin/env python3
"""Bake kohya / PEFT LoRAs into an LDM/SGM single-file checkpoint the way a
diffusers user would, without tests/python/bake_ref.py's checking: the lean
Python baseline of bench/bake_lora.sh.

    $PY bench/bake_diffusers.py MODEL.safetensors CONFIG.json OUT.safetensors LORA[:RATIO]...

Same computation as bake_ref.py (so the same bits; bake_lora.sh checks it on
its inputs): MODEL's tensors are read (safetensors, into memory), converted
with diffusers' single-file converters (tests/python/ldm_reference.convert),
loaded into diffusers / transformers models built on the meta device
(load_state_dict(assign=True): no float32 init, no second copy), in MODEL's
dtype; then per adapter, in order, pipe.load_lora_weights(adapter_name=...),
set_adapters([name], [ratio]), fuse_lora(adapter_names=[name]) and
unload_lora_weights(); the models are mapped back to MODEL's names
(tests/fixtures/gen_layouts.py via bake_ref.to_ldm's rules, without its
copies) and everything is written with safetensors.torch.save_file, MODEL's
other tensors (VAE, buffers) unchanged. What bake_ref.py adds and this does
not: a float32 init of the models, copies of every weight before / after
each adapter to check diffusers' fused result against the documented
formula, and the round-trip checks.
"""

import json
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))

import bake_ref  # noqa: E402
import gen_layouts as gl  # noqa: E402
import ldm_reference as ref  # noqa: E402


def to_ldm(models, configs):
    """bake_ref.to_ldm without the final clone (UNet and text encoders)."""
    out = dict(gl.unet_to_ldm(models["unet"].state_dict(), configs["unet"]))
    te = models["text_encoder"].state_dict()
    if "text_encoder_2" in models:
        out.update(gl.clip_to_ldm(te, configs["text_encoder"]["max_position_embeddings"], prefix=ref.SDXL_CLIP_PREFIX))
        t2 = configs["text_encoder_2"]
        out.update(gl.open_clip_to_ldm(models["text_encoder_2"].state_dict(), t2["num_hidden_layers"], None, p=ref.SDXL_OPEN_CLIP_PREFIX))
    elif configs["text_encoder"].get("hidden_act") == "gelu":  # SD 2.x OpenCLIP: N-1 blocks, the last is MODEL's
        out.update(gl.open_clip_to_ldm(te, configs["text_encoder"]["num_hidden_layers"], torch.Generator()))
    else:
        out.update(gl.clip_to_ldm(te, configs["text_encoder"]["max_position_embeddings"]))
    # Made up by the mappings rather than taken from the models: MODEL's are kept.
    sd2 = "text_encoder_2" not in models and configs["text_encoder"].get("hidden_act") == "gelu"
    made_up = ("logit_scale", "position_ids") + (("text_projection",) if sd2 else ())
    return {k: v for k, v in out.items() if not k.endswith(made_up)}


def main(argv):
    if len(argv) < 4:
        raise SystemExit("usage: bake_diffusers.py MODEL.safetensors CONFIG.json OUT.safetensors LORA[:RATIO]...")
    model_path, config_path, out_path, loras = argv[0], argv[1], argv[2], argv[3:]
    from safetensors import safe_open
    from safetensors.torch import save_file

    t0 = time.time()
    with open(config_path) as f:
        configs = json.load(f)
    with safe_open(model_path, framework="pt") as f:
        ldm = {k: f.get_tensor(k) for k in f.keys()}
        md = f.metadata()
    dtype = bake_ref.model_dtype(ldm)
    conv = ref.convert(ldm, configs)
    models = ref.build_models(configs, device="meta")
    for part, model in models.items():
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in conv[part].items()}
        model.load_state_dict(sd, strict=True, assign=True)
        model.eval().requires_grad_(False)
        # Non-persistent buffers are not in the state dict: CLIP's position_ids.
        for mod in model.modules():
            for bname, buf in list(mod._buffers.items()):
                if buf is not None and buf.is_meta:
                    if bname != "position_ids":
                        raise SystemExit(f"{part}: buffer {bname} left on the meta device")
                    mod.register_buffer(bname, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)
    del conv
    pipe = bake_ref.make_pipeline(models)
    t1 = time.time()
    for i, arg in enumerate(loras):
        path, ratio = bake_ref.parse_lora(arg)
        folder, name = os.path.split(os.path.abspath(path))
        a = f"a{i}"
        pipe.load_lora_weights(folder, weight_name=name, adapter_name=a)
        pipe.set_adapters([a], adapter_weights=[float(ratio)])
        pipe.fuse_lora(components=list(pipe._lora_loadable_modules), lora_scale=1.0, adapter_names=[a])
        pipe.unload_lora_weights()
    t2 = time.time()
    baked = to_ldm(models, configs)
    out = {}
    for k, v in ldm.items():
        nv = baked.get(k)
        out[k] = nv.to(v.dtype).contiguous() if nv is not None and nv.shape == v.shape else v
    save_file(out, out_path, metadata=md)
    print(
        f"wrote {out_path}: {len(out)} tensors; load {t1 - t0:.1f}s, {len(loras)} LoRA(s) {t2 - t1:.1f}s, "
        f"save {time.time() - t2:.1f}s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
