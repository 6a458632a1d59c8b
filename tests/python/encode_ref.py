#!/usr/bin/env python3
"""Check `ldmkit pre-encode` output and `ldmkit tokenize` against diffusers / transformers.

    encode_ref.py encoded OUT_DIR --model LDM_FILE --config CONFIG_JSON --tokenizer DIR
        For every sample in OUT_DIR's shards whose source image already has the bucket's
        size (so no resampling filter is involved) and is not a JPEG (JPEG decoders may
        differ by a level in places: libjpeg-turbo here, zune-jpeg in ldmkit), re-encode the image with diffusers'
        AutoencoderKL (latent_dist.mean / .std) and its caption with transformers'
        CLIPTokenizer + CLIPTextModel (hidden state chosen by the manifest's clip skip,
        final layer norm applied), and compare, in float32. Also the empty caption and the
        sample prompts in extras.safetensors. Fails if any relative error
        ||ours - ref|| / ||ref|| is 1e-4 or more, or if nothing was compared.

    encode_ref.py unet FILE --model LDM_FILE --config CONFIG_JSON
        FILE (safetensors) holds `latents`, `text`, `timestep` and ldmkit's `noise_pred`.
        ldmkit's UNet is candle-transformers', whose GEGLU feed-forward uses the tanh
        approximation of GELU where diffusers uses the exact one. So: with diffusers' GEGLU
        switched to the tanh GELU, every batch element must agree to 1e-4 (the network is
        otherwise the same); with diffusers as shipped, to 1e-3 (the approximation's cost).

    encode_ref.py tokens IDS_JSON --tokenizer DIR [--fast TOKENIZER_JSON]
        IDS_JSON is `ldmkit tokenize --json` output. Each caption's ids must equal the slow
        CLIPTokenizer's from DIR (padding="max_length", max_length=77, truncation), or,
        with --fast, the fast tokenizer's from TOKENIZER_JSON (pad token from DIR).

Models are built from CONFIG_JSON (tests/fixtures/layouts/*_config.json) and the LDM
weights converted by diffusers' own single-file converters (ldm_reference.convert).
"""

import argparse
import io
import json
import os
import sys
import tarfile

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ldm_reference as ref  # noqa: E402

LIMIT = 1e-4


def rel_err(ours, want):
    ours, want = ours.double(), want.double()
    return float((ours - want).norm() / want.norm().clamp_min(1e-30))


def load_ldm(model):
    ldm = load_file(model) if model.endswith(".safetensors") else None
    if ldm is None:
        obj = torch.load(model, map_location="cpu", weights_only=True)
        ldm = obj.get("state_dict", obj)
    return {k: v.float() for k, v in ldm.items() if isinstance(v, torch.Tensor)}


def load_models(model, config, parts=("vae", "text_encoder")):
    ldm = load_ldm(model)
    with open(config) as f:
        configs = json.load(f)
    configs = {k: configs[k] for k in ("unet", "vae", "text_encoder")}
    models = ref.build_models(configs)
    converted = ref.convert(ldm, configs)
    for part in parts:
        models[part].load_state_dict({k: v.float() for k, v in converted[part].items()}, strict=True)
        models[part].eval().float()
    return [models[p] for p in parts]


def source_image(manifest, key):
    """The source image's bytes and whether the sample is mirrored."""
    mirror = key.endswith("#flip")
    if mirror:
        key = key[: -len("#flip")]
    head, rest = key.split("/", 1)
    for s in manifest["sources"]:
        path = s["path"]
        if s["layout"] == "webdataset":
            tars = [path] if path.endswith(".tar") else [os.path.join(path, f) for f in sorted(os.listdir(path))]
            for t in tars:
                if os.path.basename(t) != head:
                    continue
                with tarfile.open(t) as tf:
                    for m in tf.getmembers():
                        name = os.path.basename(m.name)
                        stem, _, ext = name.partition(".")
                        member_key = "/".join(filter(None, [os.path.dirname(m.name), stem]))
                        if member_key == rest and ext.lower() in ("jpg", "jpeg", "png", "webp"):
                            return tf.extractfile(m).read(), mirror
        elif os.path.basename(os.path.normpath(path)) == head:
            p = os.path.join(path, rest)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    return f.read(), mirror
    raise SystemExit(f"cannot find the source of {key}")


def text_states(tokenizer, text_encoder, captions, clip_skip):
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        out = text_encoder(ids, output_hidden_states=True)
    if clip_skip == 1:
        return out.last_hidden_state
    return text_encoder.text_model.final_layer_norm(out.hidden_states[-clip_skip])


def check_encoded(a):
    from PIL import Image
    from transformers import CLIPTokenizer

    with open(os.path.join(a.path, "manifest.json")) as f:
        manifest = json.load(f)
    vae, text_encoder = load_models(a.model, a.config)
    tokenizer = CLIPTokenizer.from_pretrained(a.tokenizer)
    clip_skip = manifest["options"]["clip_skip"]
    worst = {"latent_mean": 0.0, "latent_std": 0.0, "text": 0.0}
    compared = {"images": 0, "texts": 0, "resampled (not compared)": 0, "jpeg (not compared)": 0}
    for shard in manifest["shards"]:
        path = os.path.join(a.path, shard["file"])
        with safe_open(path, "pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
        keys, captions = json.loads(meta["keys"]), json.loads(meta["captions"])
        assert keys == [s["key"] for s in shard["samples"]], "shard keys differ from the manifest"
        want = text_states(tokenizer, text_encoder, captions, clip_skip)
        for i in range(len(keys)):
            worst["text"] = max(worst["text"], rel_err(tensors["text"][i], want[i]))
            compared["texts"] += 1
        for i, key in enumerate(keys):
            data, mirror = source_image(manifest, key)
            if data[:2] == b"\xff\xd8":
                compared["jpeg (not compared)"] += 1
                continue
            img = Image.open(io.BytesIO(data)).convert("RGB")
            if img.size != (shard["width"], shard["height"]):
                compared["resampled (not compared)"] += 1
                continue
            if mirror:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
            with torch.no_grad():
                dist = vae.encode(x).latent_dist
            worst["latent_mean"] = max(worst["latent_mean"], rel_err(tensors["latent_mean"][i], dist.mean[0]))
            worst["latent_std"] = max(worst["latent_std"], rel_err(tensors["latent_std"][i], dist.std[0]))
            compared["images"] += 1
    with safe_open(os.path.join(a.path, manifest["extras"]), "pt") as f:
        extras = {k: f.get_tensor(k).float() for k in f.keys()}
        prompts = json.loads(f.metadata()["sample_prompts"])
    worst["empty"] = rel_err(extras["empty"][0], text_states(tokenizer, text_encoder, [""], clip_skip)[0])
    if prompts:
        worst["sample_prompts"] = rel_err(extras["sample_prompts"], text_states(tokenizer, text_encoder, prompts, clip_skip))
    print(json.dumps({"worst_relative_error": worst, "compared": compared}))
    bad = {k: v for k, v in worst.items() if not v < LIMIT}
    if bad or compared["images"] == 0 or compared["texts"] == 0:
        raise SystemExit(f"mismatch with diffusers/transformers: {bad or 'nothing compared'}")


def check_unet(a):
    (unet,) = load_models(a.model, a.config, parts=("unet",))
    from diffusers.models.activations import GEGLU

    t = load_file(a.path)
    result = {}
    for approximate, limit in (("tanh", LIMIT), ("none", 1e-3)):
        original = GEGLU.gelu
        GEGLU.gelu = lambda self, gate, _a=approximate: torch.nn.functional.gelu(gate, approximate=_a)
        try:
            with torch.no_grad():
                want = unet(t["latents"], t["timestep"].item(), encoder_hidden_states=t["text"]).sample
        finally:
            GEGLU.gelu = original
        errors = [rel_err(t["noise_pred"][i], want[i]) for i in range(want.shape[0])]
        result[f"gelu={approximate}"] = errors
        if not max(errors) < limit:
            raise SystemExit(f"UNet output differs from diffusers (GEGLU gelu={approximate}): {errors}")
    print(json.dumps({"relative_error_per_item": result}))


def check_tokens(a):
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    with open(a.path) as f:
        rows = json.load(f)
    if a.fast:
        tokenizers = {"fast": CLIPTokenizerFast(tokenizer_file=a.fast, pad_token="<|endoftext|>")}
    else:
        tokenizers = {"slow": CLIPTokenizer.from_pretrained(a.tokenizer)}
    problems = []
    for row in rows:
        for name, tok in tokenizers.items():
            ids = tok(row["text"], padding="max_length", max_length=77, truncation=True).input_ids
            if ids != row["ids"]:
                problems.append(f"{name} {row['text']!r}: transformers {ids} ldmkit {row['ids']}")
    print(json.dumps({"captions": len(rows), "tokenizers": sorted(tokenizers), "mismatches": len(problems)}))
    if problems:
        raise SystemExit("\n".join(problems[:5]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["encoded", "unet", "tokens"])
    ap.add_argument("path")
    ap.add_argument("--model")
    ap.add_argument("--config")
    ap.add_argument("--tokenizer")
    ap.add_argument("--fast")
    a = ap.parse_args()
    torch.manual_seed(0)
    {"encoded": check_encoded, "unet": check_unet, "tokens": check_tokens}[a.mode](a)


if __name__ == "__main__":
    main()
