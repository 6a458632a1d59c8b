#!/usr/bin/env python3
"""Write a full-size SD 1.x CompVis/LDM Lightning *training* checkpoint.

    PY=$(tests/python/venv.sh | tail -1)
    $PY bench/gen_sd1_training_ckpt.py bench/out/sd1-training.ckpt           # ~14.6 GB
    $PY bench/gen_sd1_training_ckpt.py --scale-test /tmp/sd1-tiny.ckpt       # ~19 MB, seconds

The file has the real SD 1.5 tensor names and shapes (shared/FORMATS.md §4.2,
§5): the UNet under `model.diffusion_model.*` in the ORIGINAL LDM naming, the
VAE under `first_stage_model.*`, CLIP-L under
`cond_stage_model.transformer.text_model.*`, the 12 DDPM schedule buffers plus
`logvar`, the LitEma copy `model_ema.*`, and the Lightning extras (`epoch`,
`global_step`, `pytorch-lightning_version`, `loops`, `callbacks`,
`optimizer_states` with AdamW `exp_avg`/`exp_avg_sq` for every UNet
parameter, `lr_schedulers`, `hparams_name`, `hyper_parameters` as an OmegaConf
DictConfig, `hparams_type`). Only names, shapes, dtypes and nesting matter for
the inspect benchmark; tensor *values* are uninitialised (see "Memory" below),
except the small ones whose value a reader might check (schedule, position_ids,
EMA decay/num_updates, optimizer step).

Sizes (asserted below, full mode):
  UNet        686 tensors  859,520,964 params
  VAE         248 tensors   83,653,863 params
  CLIP-L      197 tensors  123,060,557 elements = 123,060,480 parameters
                           + 77 elements of the int64 `embeddings.position_ids`
                           buffer. FORMATS.md/sd-mecha count per key, so the
                           published 123,060,557 INCLUDES position_ids; the
                           CLIPTextModel nn.Parameter count is 123,060,480.
  schedule     12 tensors       12,000 (float32 [1000] each) + logvar [1000]
  EMA         688 tensors  859,520,964 + decay + num_updates
  AdamW       686 x (step, exp_avg, exp_avg_sq) = 2 x 859,520,964 + 686
  => ~14.58 GB of fp32 data (FORMATS.md §0 item 3: 4.265 GB weights
     + 3.44 GB EMA + 6.88 GB AdamW = 14.6 GB = 13.6 GiB).

Memory: tensors are created with torch.empty and never written by Python, so
their pages are never touched; torch.save reads them, which maps the kernel's
shared zero page and does not count towards RSS. Peak RSS therefore stays
around 1 GB even though the file is 14.6 GB (torch.zeros would need the full
14.6 GB resident). The data in the file is all zero bytes in practice.

Container: written through a Python file object, so the zip's top-level
folder is `archive/`, as in Lightning's `trainer.save_checkpoint` (which
serialises into a BytesIO) and in the released SD 1.x .ckpt files.
"""

import argparse
import collections
import gc
import os
import resource
import sys
import time

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

# ---------------------------------------------------------------------------
# Model dimensions.
# ---------------------------------------------------------------------------

FULL = dict(
    unet_ch=320,  # model_channels
    unet_temb=1280,  # 4 * model_channels
    ctx=768,  # context_dim (CLIP-L width)
    unet_in=4,
    unet_out=4,
    vae_ch=128,
    z=4,
    clip_width=768,
    clip_mlp=3072,
    clip_layers=12,
    clip_vocab=49408,
    clip_positions=77,
    timesteps=1000,
)

# Same key names, tiny shapes. ctx stays 768 (attn2.to_k [C,768] is the SD1
# signature) and positions stay 77 (position_ids [1,77]).
TINY = dict(
    unet_ch=8,
    unet_temb=16,
    ctx=768,
    unet_in=4,
    unet_out=4,
    vae_ch=8,
    z=4,
    clip_width=16,
    clip_mlp=32,
    clip_layers=12,
    clip_vocab=64,
    clip_positions=77,
    timesteps=1000,
)

EXPECTED = {  # component: (tensor count, element count) in full mode
    "unet": (686, 859_520_964),
    "vae": (248, 83_653_863),
    "clip": (197, 123_060_557),
}

SCHEDULE_KEYS = [
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
]

# ---------------------------------------------------------------------------
# Key -> shape lists, in nn.Module state_dict order (own params/buffers first,
# then submodules in registration order), following CompVis `ldm/`.
# ---------------------------------------------------------------------------


def conv(out, cin, k):
    return [("weight", (out, cin, k, k)), ("bias", (out,))]


def linear(out, cin, bias=True):
    return [("weight", (out, cin))] + ([("bias", (out,))] if bias else [])


def norm(c):
    return [("weight", (c,)), ("bias", (c,))]


def sub(prefix, items):
    return [(f"{prefix}.{k}", s) for k, s in items]


def unet_resblock(cin, cout, temb):
    """openaimodel.ResBlock: in_layers, emb_layers, out_layers, skip_connection."""
    out = []
    out += sub("in_layers.0", norm(cin))
    out += sub("in_layers.2", conv(cout, cin, 3))
    out += sub("emb_layers.1", linear(cout, temb))
    out += sub("out_layers.0", norm(cout))
    out += sub("out_layers.3", conv(cout, cout, 3))
    if cin != cout:
        out += sub("skip_connection", conv(cout, cin, 1))
    return out


def spatial_transformer(c, ctx):
    """attention.SpatialTransformer (SD1: 1x1 conv proj_in/proj_out, depth 1,
    heads * dim_head == c) with one BasicTransformerBlock."""
    blk = []
    blk += sub("attn1.to_q", linear(c, c, bias=False))
    blk += sub("attn1.to_k", linear(c, c, bias=False))
    blk += sub("attn1.to_v", linear(c, c, bias=False))
    blk += sub("attn1.to_out.0", linear(c, c))
    blk += sub("ff.net.0.proj", linear(8 * c, c))  # GEGLU: inner 4c, x2
    blk += sub("ff.net.2", linear(c, 4 * c))
    blk += sub("attn2.to_q", linear(c, c, bias=False))
    blk += sub("attn2.to_k", linear(c, ctx, bias=False))
    blk += sub("attn2.to_v", linear(c, ctx, bias=False))
    blk += sub("attn2.to_out.0", linear(c, c))
    blk += sub("norm1", norm(c))
    blk += sub("norm2", norm(c))
    blk += sub("norm3", norm(c))
    out = []
    out += sub("norm", norm(c))
    out += sub("proj_in", conv(c, c, 1))
    out += sub("transformer_blocks.0", blk)
    out += sub("proj_out", conv(c, c, 1))
    return out


def unet_keys(d):
    """openaimodel.UNetModel with the SD 1.x v1-inference.yaml config:
    channel_mult [1,2,4,4], num_res_blocks 2, attention_resolutions [4,2,1]."""
    mc, temb, ctx = d["unet_ch"], d["unet_temb"], d["ctx"]
    mult = [1, 2, 4, 4]
    attn_ds = {1, 2, 4}
    out = []
    out += sub("time_embed.0", linear(temb, mc))
    out += sub("time_embed.2", linear(temb, temb))

    ib = [sub("0.0", conv(mc, d["unet_in"], 3))]
    chans = [mc]
    ch, ds = mc, 1
    for level, m in enumerate(mult):
        for _ in range(2):
            layers = sub("0", unet_resblock(ch, m * mc, temb))
            ch = m * mc
            if ds in attn_ds:
                layers += sub("1", spatial_transformer(ch, ctx))
            ib.append(layers)
            chans.append(ch)
        if level != len(mult) - 1:
            ib.append(sub("0.op", conv(ch, ch, 3)))  # Downsample
            chans.append(ch)
            ds *= 2
    for i, layers in enumerate(ib):
        out += sub(f"input_blocks.{i}", layers)

    out += sub("middle_block.0", unet_resblock(ch, ch, temb))
    out += sub("middle_block.1", spatial_transformer(ch, ctx))
    out += sub("middle_block.2", unet_resblock(ch, ch, temb))

    ob = []
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(3):
            ich = chans.pop()
            layers = sub("0", unet_resblock(ch + ich, m * mc, temb))
            ch = m * mc
            n = 1
            if ds in attn_ds:
                layers += sub("1", spatial_transformer(ch, ctx))
                n = 2
            if level and i == 2:
                layers += sub(f"{n}.conv", conv(ch, ch, 3))  # Upsample
                ds //= 2
            ob.append(layers)
    for i, layers in enumerate(ob):
        out += sub(f"output_blocks.{i}", layers)

    out += sub("out.0", norm(mc))
    out += sub("out.2", conv(d["unet_out"], mc, 3))
    return out


def vae_resblock(cin, cout):
    """diffusionmodules.model.ResnetBlock without temb (VAE)."""
    out = sub("norm1", norm(cin)) + sub("conv1", conv(cout, cin, 3))
    out += sub("norm2", norm(cout)) + sub("conv2", conv(cout, cout, 3))
    if cin != cout:
        out += sub("nin_shortcut", conv(cout, cin, 1))
    return out


def vae_mid(c):
    attn = sub("norm", norm(c))
    for n in ("q", "k", "v", "proj_out"):
        attn += sub(n, conv(c, c, 1))
    return sub("block_1", vae_resblock(c, c)) + sub("attn_1", attn) + sub("block_2", vae_resblock(c, c))


def vae_keys(d):
    """models.autoencoder.AutoencoderKL, SD ddconfig: ch 128, ch_mult
    [1,2,4,4], num_res_blocks 2, z_channels 4, double_z, no attn_resolutions."""
    ch, z = d["vae_ch"], d["z"]
    mult = [1, 2, 4, 4]
    enc = sub("conv_in", conv(ch, 3, 3))
    cin = ch
    for i, m in enumerate(mult):
        for j in range(2):
            enc += sub(f"down.{i}.block.{j}", vae_resblock(cin, ch * m))
            cin = ch * m
        if i != len(mult) - 1:
            enc += sub(f"down.{i}.downsample.conv", conv(cin, cin, 3))
    enc += sub("mid", vae_mid(cin))
    enc += sub("norm_out", norm(cin))
    enc += sub("conv_out", conv(2 * z, cin, 3))

    top = ch * mult[-1]
    dec = sub("conv_in", conv(top, z, 3)) + sub("mid", vae_mid(top))
    ups = {}
    cin = top
    for i in reversed(range(len(mult))):  # up.insert(0, ...): index == level
        lv = []
        for j in range(3):
            lv += sub(f"block.{j}", vae_resblock(cin, ch * mult[i]))
            cin = ch * mult[i]
        if i != 0:
            lv += sub("upsample.conv", conv(cin, cin, 3))
        ups[i] = lv
    for i in range(len(mult)):
        dec += sub(f"up.{i}", ups[i])
    dec += sub("norm_out", norm(cin))
    dec += sub("conv_out", conv(3, cin, 3))

    return sub("encoder", enc) + sub("decoder", dec) + sub("quant_conv", conv(2 * z, 2 * z, 1)) + sub(
        "post_quant_conv", conv(z, z, 1)
    )


def clip_keys(d):
    """transformers CLIPTextModel (openai/clip-vit-large-patch14), with the
    int64 position_ids buffer that SD 1.x files carry. Returns
    (name, shape, dtype)."""
    w, mlp = d["clip_width"], d["clip_mlp"]
    f32 = torch.float32
    out = [("embeddings.position_ids", (1, d["clip_positions"]), torch.int64)]
    out += [("embeddings.token_embedding.weight", (d["clip_vocab"], w), f32)]
    out += [("embeddings.position_embedding.weight", (d["clip_positions"], w), f32)]
    for i in range(d["clip_layers"]):
        layer = []
        for p in ("k_proj", "v_proj", "q_proj", "out_proj"):
            layer += sub(f"self_attn.{p}", linear(w, w))
        layer += sub("layer_norm1", norm(w))
        layer += sub("mlp.fc1", linear(mlp, w)) + sub("mlp.fc2", linear(w, mlp))
        layer += sub("layer_norm2", norm(w))
        out += [(f"encoder.layers.{i}.{k}", s, f32) for k, s in layer]
    out += [(f"final_layer_norm.{k}", s, f32) for k, s in norm(w)]
    return [("text_model." + k, s, t) for k, s, t in out]


# ---------------------------------------------------------------------------
# Small tensors with real values.
# ---------------------------------------------------------------------------


def ldm_schedule(timesteps, linear_start=0.00085, linear_end=0.012):
    """DDPM.register_schedule ("linear" beta schedule), float32 buffers."""
    betas = np.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    values = [
        betas,
        ac,
        ac_prev,
        np.sqrt(ac),
        np.sqrt(1.0 - ac),
        np.log(1.0 - ac),
        np.sqrt(1.0 / ac),
        np.sqrt(1.0 / ac - 1),
        post_var,
        np.log(np.maximum(post_var, 1e-20)),
        betas * np.sqrt(ac_prev) / (1.0 - ac),
        (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    ]
    return [(k, torch.tensor(v, dtype=torch.float32)) for k, v in zip(SCHEDULE_KEYS, values)]


class LambdaLinearScheduler:
    """CompVis ldm/lr_scheduler.py LambdaLinearScheduler (v1 training
    config). LambdaLR.state_dict() stores a callable object's __dict__, so
    `lr_schedulers[0]["lr_lambdas"][0]` is this dict, as in LDM checkpoints."""

    def __init__(self, warm_up_steps, f_min, f_max, f_start, cycle_lengths, verbosity_interval=0):
        self.lr_warm_up_steps = warm_up_steps
        self.f_start = f_start
        self.f_min = f_min
        self.f_max = f_max
        self.cycle_lengths = cycle_lengths
        self.cum_cycles = np.cumsum([0] + list(cycle_lengths)).tolist()
        self.last_f = 0.0
        self.verbosity_interval = verbosity_interval

    def __call__(self, n):
        if n < self.lr_warm_up_steps[0]:
            f = (self.f_max[0] - self.f_start[0]) / self.lr_warm_up_steps[0] * n + self.f_start[0]
        else:
            f = self.f_min[0] + (self.f_max[0] - self.f_min[0]) * (self.cycle_lengths[0] - n) / self.cycle_lengths[0]
        self.last_f = f
        return f


def loops_state(epoch, steps):
    """pytorch_lightning 2.x `loops` entry after `steps` optimizer steps."""

    def prog(n, fields=("ready", "started", "processed", "completed")):
        return {"total": {f: n for f in fields}, "current": {f: n for f in fields}}

    def batch(n, last):
        d = prog(n)
        d["is_last_batch"] = last
        return d

    def eval_loop():
        return {"state_dict": {}, "batch_progress": batch(0, False)}

    return {
        "fit_loop": {
            "state_dict": {},
            "epoch_loop.state_dict": {"_batches_that_stepped": steps},
            "epoch_loop.batch_progress": batch(steps, False),
            "epoch_loop.scheduler_progress": prog(steps, ("ready", "completed")),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": {
                "optimizer": {
                    "step": prog(steps, ("ready", "completed")),
                    "zero_grad": prog(steps, ("ready", "started", "completed")),
                }
            },
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": prog(0, ("ready", "completed")),
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": batch(0, False),
            "epoch_progress": prog(epoch),
        },
        "validate_loop": eval_loop(),
        "test_loop": eval_loop(),
        "predict_loop": {"state_dict": {}, "batch_progress": prog(0)},
    }


def hyper_parameters(d):
    """The model section of CompVis configs/stable-diffusion/v1-*.yaml."""
    return OmegaConf.create(
        {
            "base_learning_rate": 1.0e-04,
            "target": "ldm.models.diffusion.ddpm.LatentDiffusion",
            "params": {
                "linear_start": 0.00085,
                "linear_end": 0.0120,
                "num_timesteps_cond": 1,
                "log_every_t": 200,
                "timesteps": d["timesteps"],
                "first_stage_key": "jpg",
                "cond_stage_key": "txt",
                "image_size": 64,
                "channels": 4,
                "cond_stage_trainable": False,
                "conditioning_key": "crossattn",
                "monitor": "val/loss_simple_ema",
                "scale_factor": 0.18215,
                "use_ema": True,
                "scheduler_config": {
                    "target": "ldm.lr_scheduler.LambdaLinearScheduler",
                    "params": {
                        "warm_up_steps": [10000],
                        "cycle_lengths": [10000000000000],
                        "f_start": [1.0e-6],
                        "f_max": [1.0],
                        "f_min": [1.0],
                    },
                },
                "unet_config": {
                    "target": "ldm.modules.diffusionmodules.openaimodel.UNetModel",
                    "params": {
                        "image_size": 32,
                        "in_channels": d["unet_in"],
                        "out_channels": d["unet_out"],
                        "model_channels": d["unet_ch"],
                        "attention_resolutions": [4, 2, 1],
                        "num_res_blocks": 2,
                        "channel_mult": [1, 2, 4, 4],
                        "num_heads": 8,
                        "use_spatial_transformer": True,
                        "transformer_depth": 1,
                        "context_dim": d["ctx"],
                        "use_checkpoint": True,
                        "legacy": False,
                    },
                },
                "first_stage_config": {
                    "target": "ldm.models.autoencoder.AutoencoderKL",
                    "params": {
                        "embed_dim": d["z"],
                        "monitor": "val/rec_loss",
                        "ddconfig": {
                            "double_z": True,
                            "z_channels": d["z"],
                            "resolution": 256,
                            "in_channels": 3,
                            "out_ch": 3,
                            "ch": d["vae_ch"],
                            "ch_mult": [1, 2, 4, 4],
                            "num_res_blocks": 2,
                            "attn_resolutions": [],
                            "dropout": 0.0,
                        },
                        "lossconfig": {"target": "torch.nn.Identity"},
                    },
                },
                "cond_stage_config": {"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder"},
            },
        }
    )


# ---------------------------------------------------------------------------


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def count(items):
    return len(items), sum(numel(s) for _, s, *_ in items)


def build(d, full, epoch=6, global_step=20000):
    unet = unet_keys(d)
    vae = vae_keys(d)
    clip = clip_keys(d)
    got = {"unet": count(unet), "vae": count(vae), "clip": count(clip)}
    for comp, (n_keys, n_params) in EXPECTED.items():
        assert got[comp][0] == n_keys, f"{comp}: {got[comp][0]} tensors, expected {n_keys}"
        if full:
            assert got[comp][1] == n_params, f"{comp}: {got[comp][1]:,} elements, expected {n_params:,}"
    clip_params = sum(numel(s) for k, s, t in clip if t.is_floating_point)
    if full:
        assert clip_params == 123_060_480, clip_params  # nn.Parameters only

    empty = lambda shape, dtype=torch.float32: torch.empty(shape, dtype=dtype)  # noqa: E731

    # LatentDiffusion.state_dict(): own buffers (schedule) first, then
    # model, model_ema, first_stage_model, cond_stage_model.
    sd = collections.OrderedDict()
    for k, v in ldm_schedule(d["timesteps"]):
        sd[k] = v
    # DDPM keeps `logvar` as a plain attribute unless learn_logvar; it is in
    # the brief (and some files) so it is written here, after the schedule.
    sd["logvar"] = torch.zeros(d["timesteps"], dtype=torch.float32)
    unet_tensors = []
    for k, s in unet:
        t = empty(s)
        unet_tensors.append(t)
        sd["model.diffusion_model." + k] = t
    sd["model_ema.decay"] = torch.tensor(0.9999, dtype=torch.float32)
    sd["model_ema.num_updates"] = torch.tensor(global_step, dtype=torch.int32)
    for k, s in unet:
        # LitEma: "model_ema." + name-in-DiffusionWrapper with dots removed.
        sd["model_ema." + ("diffusion_model." + k).replace(".", "")] = empty(s)
    for k, s in vae:
        sd["first_stage_model." + k] = empty(s)
    for k, s, dt in clip:
        if k.endswith("position_ids"):
            sd["cond_stage_model.transformer." + k] = torch.arange(d["clip_positions"], dtype=torch.int64)[None]
        else:
            sd["cond_stage_model.transformer." + k] = empty(s, dt)
    assert sum(1 for k in sd if k.startswith("model_ema.")) == 688

    # AdamW over the UNet (cond/first stage are frozen in SD training). The
    # Parameters share storage with the state_dict tensors; the optimizer
    # state dict only refers to them by index.
    params = [torch.nn.Parameter(t) for t in unet_tensors]
    opt = torch.optim.AdamW(params, lr=1.0e-4, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lr_lambda=LambdaLinearScheduler(
            warm_up_steps=[10000], f_min=[1.0], f_max=[1.0], f_start=[1.0e-6], cycle_lengths=[10000000000000]
        ),
    )
    for p in params:
        opt.state[p] = {
            "step": torch.tensor(float(global_step), dtype=torch.float32),
            "exp_avg": torch.empty_like(p, memory_format=torch.preserve_format).detach(),
            "exp_avg_sq": torch.empty_like(p, memory_format=torch.preserve_format).detach(),
        }
    # Fast-forward the scheduler to global_step without stepping it 20k times.
    sched.last_epoch = global_step
    sched._step_count = global_step + 1
    f = sched.lr_lambdas[0](global_step)
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] * f
    sched._last_lr = [g["lr"] for g in opt.param_groups]
    optimizer_state = opt.state_dict()
    lr_state = sched.state_dict()
    del opt, sched, params

    ckpt_dir = "/fsx/stable-diffusion/logs/2022-08-01T00-00-00_txt2img-1p4B-multinode/checkpoints"
    cb = ModelCheckpoint(
        dirpath=ckpt_dir, filename="{epoch:06}", monitor="val/loss_simple_ema", save_top_k=3, save_last=True
    )
    best = f"{ckpt_dir}/epoch={epoch - 1:06}.ckpt"
    cb.best_k_models = {best: torch.tensor(0.1234)}
    cb.kth_best_model_path = best
    cb.kth_value = torch.tensor(0.1234)
    cb.best_model_path = best
    cb.best_model_score = torch.tensor(0.1234)
    cb.current_score = torch.tensor(0.1301)
    cb.last_model_path = f"{ckpt_dir}/last.ckpt"

    # Key order of pytorch_lightning 2.x CheckpointConnector.dump_checkpoint.
    return {
        "epoch": epoch,
        "global_step": global_step,
        "pytorch-lightning_version": pl.__version__,
        "state_dict": sd,
        "loops": loops_state(epoch, global_step),
        "callbacks": {cb.state_key: cb.state_dict()},
        "optimizer_states": [optimizer_state],
        "lr_schedulers": [lr_state],
        "hparams_name": "config",
        "hyper_parameters": hyper_parameters(d),
        "hparams_type": DictConfig,
    }


def summarize(obj):
    n_tensors = 0
    n_bytes = 0
    seen = set()

    def walk(o):
        nonlocal n_tensors, n_bytes
        if isinstance(o, torch.Tensor):
            n_tensors += 1
            n_bytes += o.numel() * o.element_size()
        elif isinstance(o, dict):
            for v in o.values():
                walk(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                walk(v)

    walk({k: v for k, v in obj.items() if k != "hyper_parameters"})
    return n_tensors, n_bytes


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="output .ckpt path")
    ap.add_argument("--scale-test", action="store_true", help="tiny shapes, same keys (seconds, ~19 MB)")
    args = ap.parse_args(argv)

    t0 = time.time()
    obj = build(TINY if args.scale_test else FULL, full=not args.scale_test)
    n_tensors, n_bytes = summarize(obj)
    print(
        f"built {n_tensors} tensors, {n_bytes:,} bytes ({n_bytes / 1e9:.2f} GB) in {time.time() - t0:.1f}s",
        file=sys.stderr,
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".partial"
    t1 = time.time()
    # A file object (not a path) makes torch name the zip folder "archive/",
    # like Lightning's BytesIO-based save and the released SD .ckpt files.
    with open(tmp, "wb") as f:
        torch.save(obj, f)
    del obj
    gc.collect()
    os.replace(tmp, args.out)
    size = os.path.getsize(args.out)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"wrote {args.out}: {size:,} bytes ({size / 1e9:.2f} GB) in {time.time() - t1:.1f}s; "
        f"peak RSS {rss_kb / 1024:.0f} MiB",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
