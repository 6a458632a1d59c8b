"""The PyTorch baseline for `ldmkit bench-train`: full fine-tuning steps of the SD 1.5 UNet
with diffusers' UNet2DConditionModel (random weights), the way diffusers'
train_text_to_image.py runs it: f32 master weights, bf16 autocast, fused AdamW, SDPA
attention, optionally gradient checkpointing; TF32 on. Same batch sizes, same step
(forward, MSE loss, backward, clip_grad_norm_, AdamW), timed the same way (median of
synchronised steps after a warm-up). One JSON line per configuration.

    python3 bench/torch_train.py [--batch 1,4,8] [--checkpointing off,on] [--iters 10]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                 cross_attention_dim=768, attention_head_dim=8)


def run(batch, ckpt, warmup, iters, latent):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    unet = UNet2DConditionModel(**SD15_UNET).cuda().train()
    if ckpt:
        unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-6, fused=True)
    x = torch.randn(batch, 4, latent, latent, device="cuda")
    target = torch.randn_like(x)
    ctx = torch.randn(batch, 77, 768, device="cuda")
    t = torch.tensor([(i * 379 + 17) % 1000 for i in range(batch)], device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = unet(x, t, ctx).sample
        loss = F.mse_loss(pred.float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    try:
        for i in range(warmup + iters):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        times.sort()
        med = times[len(times) // 2]
        r = dict(impl="torch", batch=batch, precision="bf16", checkpointing=ckpt, step_s=med,
                 samples_per_s=batch / med, peak_alloc_gib=torch.cuda.max_memory_allocated() / 2**30,
                 peak_reserved_gib=torch.cuda.max_memory_reserved() / 2**30, latent=latent)
    except torch.OutOfMemoryError:
        r = dict(impl="torch", batch=batch, checkpointing=ckpt, error="out of memory")
    print(json.dumps(r), flush=True)
    del unet, opt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,4,8")
    ap.add_argument("--checkpointing", default="off,on")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--latent", type=int, default=64)
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    print(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name()}), flush=True)
    for ckpt in a.checkpointing.split(","):
        for b in a.batch.split(","):
            run(int(b), ckpt == "on", a.warmup, a.iters, a.latent)


if __name__ == "__main__":
    main()
