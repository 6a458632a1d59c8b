#!/usr/bin/env python3
"""PyTorch side of bench/pre_encode_gpu.sh: the baseline ldmkit's pre-encoding is measured
against, on the same card in the same device call.

    torch_encode.py make-model DIR     SD 1.5's VAE and CLIP ViT-L/14 text encoder with
                                       random weights (seed 0; throughput does not depend on
                                       values), saved as a diffusers folder (vae/,
                                       text_encoder/) for ldmkit to load
    torch_encode.py images DIR N       N 512x512 JPEGs with .txt captions (kohya layout)
    torch_encode.py bench DIR          diffusers' AutoencoderKL.encode (latent_dist mean and
                                       std) at 512², batch 8, and transformers'
                                       CLIPTextModel at batch 64, in float32 and bfloat16:
                                       one JSON line per precision

Timing as bench/../shared torch_sd15_train.py does: 3 warm-up calls, then the mean of 10,
with torch.cuda.synchronize() around. PyTorch's defaults are kept (cuDNN may use TF32 for
float32 convolutions; matmuls stay float32), as a diffusers user runs it.
"""
import json
import os
import sys
import time

import torch

SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                sample_size=512)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
              projection_dim=768)


def make_model(out):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from safetensors import safe_open
    from safetensors.torch import save_file

    torch.manual_seed(0)
    AutoencoderKL(**SD15_VAE).save_pretrained(os.path.join(out, "vae"))
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    # What this transformers' save_pretrained writes, for the record ...
    probe = out + "-save-pretrained"
    text.save_pretrained(probe)
    for name in sorted(os.listdir(probe)):
        line = name
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(probe, name), "pt") as f:
                keys = sorted(f.keys())
            line += f": {len(keys)} tensors, e.g. {keys[:2]}"
        print("save_pretrained wrote", line, file=sys.stderr)
    # ... and the layout diffusers folders on the Hub have (state dict as model.safetensors).
    os.makedirs(os.path.join(out, "text_encoder"), exist_ok=True)
    text.config.to_json_file(os.path.join(out, "text_encoder", "config.json"))
    save_file({k: v.contiguous() for k, v in text.state_dict().items()},
              os.path.join(out, "text_encoder", "model.safetensors"), metadata={"format": "pt"})


def images(out, n):
    import numpy as np
    from PIL import Image

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (rng.random((512, 512, 3)) * 255).astype(np.uint8)
    for i in range(n):
        img = np.roll(base, i * 7, axis=1)
        Image.fromarray(img).save(os.path.join(out, f"{i:05}.jpg"), quality=90)
        with open(os.path.join(out, f"{i:05}.txt"), "w") as f:
            f.write(f"a photo of a cat number {i}, high quality, detailed")


def timed(fn, warm=3, iters=10):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def bench(folder, batch=8, text_batch=64):
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    dev = "cuda"
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae")).to(dev, dtype=dtype).eval()
        img = torch.rand(batch, 3, 512, 512, device=dev, dtype=dtype) * 2 - 1

        def encode():
            d = vae.encode(img).latent_dist
            return d.mean, d.std

        with torch.no_grad():
            vae_s = timed(encode)
        del vae
        text = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder")).to(dev, dtype=dtype).eval()
        ids = torch.randint(0, 49408, (text_batch, 77), device=dev)
        with torch.no_grad():
            clip_s = timed(lambda: text(ids).last_hidden_state)
        del text
        torch.cuda.empty_cache()
        print(json.dumps({
            "impl": "pytorch", "torch": torch.__version__, "device": torch.cuda.get_device_name(),
            "precision": name,
            "vae_encode": {"batch": batch, "resolution": 512, "step_s": vae_s, "images_per_s": batch / vae_s},
            "clip_text": {"batch": text_batch, "step_s": clip_s, "texts_per_s": text_batch / clip_s},
        }), flush=True)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "make-model":
        make_model(sys.argv[2])
    elif what == "images":
        images(sys.argv[2], int(sys.argv[3]))
    elif what == "bench":
        bench(sys.argv[2])
    else:
        raise SystemExit(__doc__)
