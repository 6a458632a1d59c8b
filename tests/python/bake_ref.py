#!/usr/bin/env python3
"""Reference bake: apply LoRA / LyCORIS adapters to an LDM/SGM single-file
checkpoint with the real libraries, and write the result under the
checkpoint's own names.

    $(tests/python/venv.sh) tests/python/bake_ref.py [--dtype float32] \\
        MODEL.safetensors CONFIG.json OUT.safetensors LORA[:RATIO]...

RATIO defaults to 1.0. Exits non-zero with one line on stderr on any failure.

Pipeline
--------
1. CONFIG's diffusers/transformers configs build the models
   (ldm_reference.build_models); MODEL's tensors are converted by diffusers'
   own single-file converters (ldm_reference.convert) and loaded strictly.
   The models run in MODEL's float dtype (float16 for the fixtures), or in
   float32 with --dtype float32 (upcast first, everything below in float32,
   cast back to MODEL's dtype, round-to-nearest-even, only when writing).
2. Adapters are applied one at a time, in command-line order:
       W <- round_w(W + round_w(ΔW_i(ratio_i)))      (round_w = to W's dtype)
   so two adapters give round(round(W + d1) + d2), never round(W + d1 + d2).
   a. kohya LoRA / LoCon (`lora_unet_*` / `lora_te[12]_*`, `.lora_down`,
      `.lora_up`, `.alpha`; .safetensors or torch .pt/.ckpt) and diffusers/PEFT
      files (`unet.*.lora_A.weight`, `lora_B`, optional `lora_adapter_metadata`):
      StableDiffusion(XL)Pipeline.load_lora_weights(adapter_name=f"a{i}")
      (a path for .safetensors, so diffusers reads lora_adapter_metadata; the
      loaded dict for pickles), pipe.set_adapters([f"a{i}"], [ratio]),
      pipe.fuse_lora(components=pipe._lora_loadable_modules,
      adapter_names=[f"a{i}"]), pipe.unload_lora_weights() (keeps the fused
      weights). Fusing one adapter at a time gives the same bits as
      set_adapters(all, ratios) + one fuse_lora: peft merges per module in
      adapter order either way. Any diffusers/peft warning during load or
      fuse (e.g. "unexpected keys") is an error.
   b. kohya DoRA (`.dora_scale`): diffusers 0.35.2's SD / SDXL lora_state_dict
      drops every dora_scale key with a warning (lora_pipeline.py), and its
      converter garbles text-encoder MLP magnitude names, so these go through
      peft directly: the module is found by kohya's naming rule, peft
      LoraConfig(use_dora=True, per-module r / lora_alpha) is injected
      (peft.inject_adapter_in_model + set_peft_model_state_dict, with
      dora_scale [out, 1] reshaped to peft's lora_magnitude_vector [out]),
      then set_scale(ratio) and merge() on each layer - what diffusers'
      set_adapters / fuse_lora call - and the layers are removed again.
      [1, in] (LyCORIS wd_on_output=False) magnitudes are refused.
   c. LyCORIS LoHa / LoKr / full / (IA)^3 / GLoRA (and LoCon modules inside a
      LyCORIS file): diffusers cannot load them; ΔW is computed here from
      lycoris-lora 3.2.0's functional definitions (lycoris/functional/*.py,
      see lycoris_delta) onto the diffusers modules, with the same rounding
      convention as PEFT's merge (below).
3. The models are mapped back to MODEL's LDM names with
   tests/fixtures/gen_layouts.py (unet_to_ldm, clip_to_ldm, open_clip_to_ldm:
   SDXL text_encoder_2 q/k/v are concatenated back into attn.in_proj_weight /
   in_proj_bias, text_projection.weight transposed back). Every tensor of MODEL
   is written to OUT in MODEL's dtype: mapped ones from the baked models,
   everything else (VAE, schedule buffers, position_ids, logit_scale, tensors
   diffusers does not keep) unchanged. A mapped tensor that did not
   round-trip bit-exactly before baking is kept from MODEL and must not have
   been touched by an adapter.

Rounding (what the Rust side must reproduce bit for bit)
--------------------------------------------------------
W is the module weight in the working dtype (MODEL's, i.e. float16, or
float32 with --dtype float32); f32(x) rounds to float32, round_w(x) to W's
dtype, both round-to-nearest-even. s = f32(ratio * alpha / r) with
ratio * alpha / r evaluated in float64 left to right (peft's set_scale:
scale * lora_alpha / r), then applied as one float32 multiply.

* LoRA / LoCon via diffusers (peft/tuners/lora/layer.py Linear / _ConvNd
  get_delta_weight + merge): diffusers casts the adapter factors to the
  model's dtype when loading (a float32 PEFT file's lora_A / lora_B are
  rounded to float16 for a float16 model). On CPU with float16 factors peft
  upcasts them to float32:
      Linear, Conv 1x1:  core = f32(up) @ f32(down)          (float32 matmul)
      Conv kxk:          core[o,i,kh,kw] = sum_r up[o,r,0,0] * down[r,i,kh,kw]
                         (F.conv2d(down^T, up), float32)
      ΔW = round_w(core * s)     W <- round_w(W + ΔW)
  i.e. for float16: delta computed in float32, cast to float16, then a float16
  add. alpha: the file's `.alpha` (kohya; absent -> alpha = r), or
  lora_adapter_metadata's lora_alpha / alpha_pattern (PEFT; absent ->
  lora_alpha = r).
* DoRA (peft/tuners/lora/variants.py DoraLinearVariant.merge_unsafe,
  dora.py DoraLinearLayer.get_weight_norm):
      d  = round_w(core * s)      Wc = round_w(W + d)
      n  = round_w(||Wc[o, :]||_2)  (torch.linalg.norm over dim 1, float32
           accumulation inside, result in W's dtype)
      f  = round_w(m / n)          W <- round_w(f[:, None] * Wc)
  m = dora_scale (round_w). ratio enters only through s (peft semantics: the
  norm is taken of W + ratio*ΔW). No eps. LyCORIS / ComfyUI instead use
  scale = m / (||W + ΔW|| + eps) and, for ratio != 1,
  W' = (W + ΔW) * (ratio * (scale - 1) + 1); for ratio = 1 only the eps
  differs.
* LyCORIS kinds (this script, convention of PEFT's merge): every factor is
  upcast to float32 (file values, float16 for the fixtures; the base weight W
  where the formula uses it, as it stands when this adapter is applied),
  core is computed in float32 exactly as written below (torch ops, float32
  matmul / einsum / kron), then ΔW = round_w(f32(core) * s) (one float32
  multiply; s = ratio for full / IA3 and for LoKr with both factors full),
  W <- round_w(W + ΔW); full's diff_b: b <- round_b(b + round_b(diff_b*ratio)).
      LoHa   core = (w1a @ w1b) * (w2a @ w2b)          (lycoris/functional/loha.py
             make_weight; Tucker: rebuild_i[p,q,...] =
             sum_ij t_i[a,b,...] w_ia[a,p] w_ib[b,q] via
             einsum("i j ..., j r, i p -> p r ...", t, w_b, w_a), core = rebuild1*rebuild2)
             s = ratio*alpha/r, r = hada_w1_b.shape[0]
      LoKr   core = kron(w1, w2)                          (functional/lokr.py make_kron)
             w1 = lokr_w1 or lokr_w1_a @ lokr_w1_b,
             w2 = lokr_w2 or lokr_w2_a @ lokr_w2_b (reshaped to [b, d, *k] for
             convs) or, Tucker, einsum("i j ..., i p, j r -> p r ...", lokr_t2,
             lokr_w2_a, lokr_w2_b) (functional/general.py rebuild_tucker);
             w1 unsqueezed to w2's rank. s = ratio*alpha/r with
             r = lokr_w1_b.shape[0] if lokr_w1_b else lokr_w2_b.shape[0];
             both lokr_w1 and lokr_w2 full: s = ratio (alpha ignored,
             modules/lokr.py: "use scale = 1").
      full   core = diff                                   (modules/full.py)
      IA3    core = W * w[:, None]  (on_input == 0: w has out entries)
             core = W * w[None, :]  (on_input != 0: w has in entries)
             (modules/ia3.py make_weight), s = ratio
      GLoRA  core = b1 @ b2 + (W @ a1) @ a2 (convs: b1.view(out,-1) @
             b2.view(r,-1), einsum("o i ..., i j -> o j ...") twice)
             (modules/glora.py make_weight), s = ratio*alpha/r, r = a2.shape[0]
      LoCon  core = up.view(out,-1) @ down.view(r,-1), s = ratio*alpha/r
             (functional/locon.py diff_weight scales `up` before the matmul;
             here the scale is applied after, as peft does)
  Then the result is reshaped to the module weight's shape.

float32 accumulation order (BLAS matmul, conv, einsum) is the library's;
for float16 output it is invisible in all but the rarest rounding ties.
Every diffusers-path LoRA (not DoRA) is re-derived here from the file with
the formula above and must match diffusers' fused weight bit for bit.
"""

import argparse
import json
import logging
import os
import re
import sys
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))

import ldm_reference as ref  # noqa: E402


class BakeError(Exception):
    pass


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def read_adapter(path):
    """(tensors, safetensors metadata or None)."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BakeError(f"{path}: not a flat tensor dict")
    return sd, None


KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
LORA_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha", "dora_scale", "lora_mid.weight")


def classify(sd):
    """"peft" | "kohya_lora" | "kohya_dora" | "lycoris"."""
    if all(k.split(".")[0] in ("unet", "text_encoder", "text_encoder_2") for k in sd) and any(
        ".lora_A." in k for k in sd
    ):
        return "peft"
    if not all(k.startswith(KOHYA_PREFIXES) for k in sd):
        bad = next(k for k in sd if not k.startswith(KOHYA_PREFIXES))
        raise BakeError(f"unknown adapter key spelling: {bad}")
    modules = group_modules(sd)
    lora_only = all(
        "lora_down.weight" in p and "lora_up.weight" in p and set(p) <= set(LORA_SUFFIXES) and "lora_mid.weight" not in p
        for p in modules.values()
    )
    if lora_only:
        return "kohya_dora" if any("dora_scale" in p for p in modules.values()) else "kohya_lora"
    return "lycoris"


def group_modules(sd):
    out = {}
    for k, v in sd.items():
        name, _, suffix = k.partition(".")
        out.setdefault(name, {})[suffix] = v
    return out


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

TEXT_PARTS = ("text_encoder", "text_encoder_2")


def model_dtype(ldm):
    dts = {v.dtype for k, v in ldm.items() if v.is_floating_point() and k.startswith((ref.UNET_PREFIX, ref.VAE_PREFIX))}
    if len(dts) != 1:
        raise BakeError(f"MODEL's UNet/VAE tensors have dtypes {sorted(map(str, dts))}; expected one")
    return dts.pop()


def build(ldm, configs, dtype):
    conv = ref.convert(ldm, configs)
    models = ref.build_models(configs)
    ref.check_against(conv, models)
    for part, model in models.items():
        model.to(dtype)
        model.load_state_dict({k: v.to(dtype) if v.is_floating_point() else v for k, v in conv[part].items()}, strict=True)
        model.eval()
        model.requires_grad_(False)
    return models


def make_pipeline(models):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if "text_encoder_2" in models:
        return StableDiffusionXLPipeline(
            vae=models["vae"],
            text_encoder=models["text_encoder"],
            text_encoder_2=models["text_encoder_2"],
            tokenizer=None,
            tokenizer_2=None,
            unet=models["unet"],
            scheduler=EulerDiscreteScheduler(steps_offset=1),
            add_watermarker=False,
        )
    return StableDiffusionPipeline(
        vae=models["vae"],
        text_encoder=models["text_encoder"],
        tokenizer=None,
        unet=models["unet"],
        scheduler=EulerDiscreteScheduler(steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def to_ldm(models, configs):
    """Baked diffusers models -> LDM names (UNet and text encoders only)."""
    import gen_layouts as gl

    out = {}
    out.update(gl.unet_to_ldm(models["unet"].state_dict(), configs["unet"]))
    te = models["text_encoder"].state_dict()
    sdxl = "text_encoder_2" in models
    if sdxl:
        out.update(gl.clip_to_ldm(te, configs["text_encoder"]["max_position_embeddings"], prefix=ref.SDXL_CLIP_PREFIX))
        t2 = configs["text_encoder_2"]
        out.update(
            gl.open_clip_to_ldm(
                models["text_encoder_2"].state_dict(), t2["num_hidden_layers"], torch.Generator(), p=ref.SDXL_OPEN_CLIP_PREFIX
            )
        )
    elif "text_model.encoder.layers.0.self_attn.q_proj.weight" in te and configs["text_encoder"].get("hidden_act") == "gelu":
        # SD2 (OpenCLIP tower; diffusers keeps N-1 blocks, the last one is MODEL's)
        out.update(gl.open_clip_to_ldm(te, configs["text_encoder"]["num_hidden_layers"], torch.Generator()))
    else:
        out.update(gl.clip_to_ldm(te, configs["text_encoder"]["max_position_embeddings"]))
    return {k: v.detach().clone() for k, v in out.items()}


# --------------------------------------------------------------------------
# kohya / peft names -> modules
# --------------------------------------------------------------------------


def kohya_table(models, configs):
    """kohya module name -> (part, module path): `lora_unet_` + diffusers path
    (SD1/SD2 files, LyCORIS' own rule) and `lora_unet_` + LDM/SGM path
    (sd-scripts' SDXL files); `lora_te_` / `lora_te1_` for text_encoder,
    `lora_te2_` for text_encoder_2. '.' -> '_' throughout."""
    import gen_layouts as gl

    table = {}
    for name, mod in models["unet"].named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            table[f"lora_unet_{name}".replace(".", "_")] = ("unet", name)
            (ldm_key,) = gl.unet_to_ldm({name + ".weight": None}, configs["unet"]).keys()
            sgm = ldm_key[len(ref.UNET_PREFIX) : -len(".weight")]
            table.setdefault(f"lora_unet_{sgm}".replace(".", "_"), ("unet", name))
    prefixes = {"text_encoder": ("lora_te", "lora_te1"), "text_encoder_2": ("lora_te2",)}
    for part in TEXT_PARTS:
        if part not in models:
            continue
        for name, mod in models[part].named_modules():
            if isinstance(mod, torch.nn.Linear):
                for p in prefixes[part]:
                    table[f"{p}_{name}".replace(".", "_")] = (part, name)
    return table


def resolve(table, name):
    if name not in table:
        raise BakeError(f"adapter module {name} matches no module of the model")
    return table[name]


def alpha_of(params, rank):
    a = params.get("alpha")
    if a is None:
        return float(rank)
    a = float(a)
    return float(rank) if a == 0 else a


def scale(ratio, alpha, rank):
    return float(ratio) * float(alpha) / float(rank)


# --------------------------------------------------------------------------
# ΔW formulas
# --------------------------------------------------------------------------


def lora_core(up, down, weight_shape):
    """peft Linear / _ConvNd get_delta_weight's product (float32 in, float32 out)."""
    if len(weight_shape) == 2:
        return up @ down
    if tuple(weight_shape[2:]) == (1, 1):
        return (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2)).unsqueeze(2).unsqueeze(3)
    return torch.nn.functional.conv2d(down.transpose(0, 1), up).transpose(0, 1)


def lycoris_delta(kind, p, W, ratio):
    """float32 ΔW (before the cast to W's dtype) of one LyCORIS module, from
    its file tensors `p` (suffix -> tensor) and the current weight W. Returns
    (ΔW, Δbias or None)."""
    from lycoris.functional.general import rebuild_tucker
    from lycoris.functional.loha import make_weight as hada, make_weight_tucker as hada_tucker
    from lycoris.functional.lokr import make_kron

    f = {k: v.float() for k, v in p.items() if v.is_floating_point()}
    shape = tuple(W.shape)
    W32 = W.float()
    if kind == "loha":
        w1a, w1b, w2a, w2b = f["hada_w1_a"], f["hada_w1_b"], f["hada_w2_a"], f["hada_w2_b"]
        r = w1b.shape[0]
        s = scale(ratio, alpha_of(p, r), r)
        if "hada_t1" in f:
            core = hada_tucker(f["hada_t1"], w1b, w1a, f["hada_t2"], w2b, w2a, torch.tensor(1.0))
        else:
            core = hada(w1b.reshape(r, -1), w1a.reshape(-1, r), w2b.reshape(r, -1), w2a.reshape(-1, r), torch.tensor(1.0))
        return core.reshape(shape) * s, None
    if kind == "lokr":
        full1, full2 = "lokr_w1" in f, "lokr_w2" in f
        w1 = f["lokr_w1"] if full1 else f["lokr_w1_a"] @ f["lokr_w1_b"]
        if full2:
            w2 = f["lokr_w2"]
        elif "lokr_t2" in f:
            w2 = rebuild_tucker(f["lokr_t2"], f["lokr_w2_a"], f["lokr_w2_b"])
        else:
            w2 = f["lokr_w2_a"] @ f["lokr_w2_b"]
            if len(shape) > 2:  # [b, d*k*k] -> [b, d, *k]
                w2 = w2.reshape(w2.shape[0], -1, *shape[2:])
        if full1 and full2:
            s = float(ratio)
        else:
            r = (f["lokr_w1_b"] if not full1 else f["lokr_w2_b"]).shape[0]
            s = scale(ratio, alpha_of(p, r), r)
        return make_kron(w1, w2, 1).reshape(shape) * s, None
    if kind == "full":
        db = f["diff_b"] * float(ratio) if "diff_b" in f else None
        return f["diff"].reshape(shape) * float(ratio), db
    if kind == "ia3":
        w = f["weight"].reshape(-1)
        on_input = bool(float(p["on_input"])) if "on_input" in p else False
        if on_input:
            core = W32 * w.reshape(1, -1, *[1] * (W.dim() - 2))
        else:
            core = W32 * w.reshape(-1, *[1] * (W.dim() - 1))
        return core * float(ratio), None
    if kind == "glora":
        if "bm.weight" in f:
            raise BakeError("GLoRA with Tucker (bm.weight) is not supported")
        a1, a2, b1, b2 = f["a1.weight"], f["a2.weight"], f["b1.weight"], f["b2.weight"]
        r = a2.shape[0]
        s = scale(ratio, alpha_of(p, r), r)
        wa1 = a1.reshape(a1.shape[0], -1)
        wa2 = a2.reshape(r, -1)
        wb = (b1.reshape(b1.shape[0], -1) @ b2.reshape(b2.shape[0], -1)).reshape(shape)
        if W32.dim() > 2:
            w_wa2 = torch.einsum("o i ..., i j -> o j ...", torch.einsum("o i ..., i j -> o j ...", W32, wa1), wa2)
        else:
            w_wa2 = (W32 @ wa1) @ wa2
        return (wb + w_wa2) * s, None
    if kind == "locon":
        up, down = f["lora_up.weight"], f["lora_down.weight"]
        r = down.shape[0]
        s = scale(ratio, alpha_of(p, r), r)
        if "lora_mid.weight" in f:
            core = rebuild_tucker(f["lora_mid.weight"], up.reshape(up.shape[0], -1).transpose(0, 1), down.reshape(r, -1))
        else:
            core = up.reshape(up.shape[0], -1) @ down.reshape(r, -1)
        return core.reshape(shape) * s, None
    raise BakeError(f"unsupported LyCORIS kind {kind}")


LYCORIS_KINDS = {
    "LoConModule": "locon",
    "LohaModule": "loha",
    "LokrModule": "lokr",
    "FullModule": "full",
    "IA3Module": "ia3",
    "GLoRAModule": "glora",
}


def lycoris_kind(sd, name):
    from lycoris.modules import get_module

    cls, _ = get_module(sd, name)
    if cls is None or cls.__name__ not in LYCORIS_KINDS:
        raise BakeError(f"{name}: unsupported LyCORIS module ({None if cls is None else cls.__name__})")
    return LYCORIS_KINDS[cls.__name__]


# --------------------------------------------------------------------------
# Appliers
# --------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def guarded(what, fn):
    """Run fn; any diffusers/peft logging warning or Python warning is an error."""
    cap = Capture()
    loggers = [logging.getLogger(n) for n in ("diffusers", "peft")]
    for lg in loggers:
        lg.addHandler(cap)
    try:
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter("always")
            out = fn()
    finally:
        for lg in loggers:
            lg.removeHandler(cap)
    msgs = cap.messages + [str(w.message) for w in ws if not BENIGN_WARNING.search(str(w.message))]
    if msgs:
        raise BakeError(f"{what}: " + " | ".join(m.replace("\n", " ")[:300] for m in msgs))
    return out


# transformers' get_peft_model_state_dict-style notice without a model dir;
# emitted by peft for transformers models and harmless.
BENIGN_WARNING = re.compile(r"^Could not find a config file in")


def weights_of(models):
    return {(part, n): m.weight.detach().clone() for part, model in models.items() for n, m in model.named_modules() if hasattr(m, "weight") and isinstance(m.weight, torch.Tensor) and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


def tuner_layers(models, adapter):
    from peft.tuners.tuners_utils import BaseTunerLayer

    out = {}
    for part, model in models.items():
        for name, mod in model.named_modules():
            if isinstance(mod, BaseTunerLayer) and adapter in getattr(mod, "lora_A", {}):
                out[(part, name)] = mod
    return out


def expected_lora(W, up, down, s):
    """The documented LoRA merge, re-derived (see module docstring)."""
    dt = W.dtype
    up, down = up.to(dt).float(), down.to(dt).float()
    core = lora_core(up, down, W.shape)
    return (W + (core * s).to(dt)).to(dt)


def expected_dora(W, up, down, mag, s):
    """The documented DoRA merge (peft DoraLinearVariant.merge_unsafe), re-derived."""
    dt = W.dtype
    d = (lora_core(up.to(dt).float(), down.to(dt).float(), W.shape) * s).to(dt)
    wc = W + d
    n = torch.linalg.norm(wc, dim=1).to(dt)
    f = mag.reshape(-1).to(dt) / n
    return (f.view(-1, 1) * wc).to(dt)


def peft_entries(sd, metadata):
    """PEFT file -> {(part, path): (up, down, alpha, r)} with diffusers'
    reading of lora_adapter_metadata (lora_alpha / alpha_pattern; none:
    alpha = r)."""
    from peft.utils.other import get_pattern_key

    meta = json.loads(metadata["lora_adapter_metadata"]) if metadata and "lora_adapter_metadata" in metadata else None
    out = {}
    for k in sd:
        m = re.fullmatch(r"(unet|text_encoder|text_encoder_2)\.(.+)\.lora_A\.weight", k)
        if not m:
            if ".lora_B." in k:
                continue
            raise BakeError(f"PEFT key not understood: {k}")
        part, path = m.groups()
        down, up = sd[k], sd[f"{part}.{path}.lora_B.weight"]
        r = down.shape[0]
        alpha = float(r)
        if meta is not None and f"{part}.lora_alpha" in meta:
            alpha = float(meta[f"{part}.lora_alpha"])
            pat = meta.get(f"{part}.alpha_pattern") or {}
            key = get_pattern_key(pat.keys(), path)
            if key in pat:
                alpha = float(pat[key])
        out[(part, path)] = (up, down, alpha, r)
    return out


def kohya_entries(sd, table):
    out = {}
    for name, p in group_modules(sd).items():
        part, path = resolve(table, name)
        down, up = p["lora_down.weight"], p["lora_up.weight"]
        r = down.shape[0]
        out[(part, path)] = (up, down, alpha_of(p, r), r, p.get("dora_scale"))
    return out


def apply_diffusers(pipe, models, path, sd, metadata, kind, ratio, adapter, table):
    entries = peft_entries(sd, metadata) if kind == "peft" else {k: v[:4] for k, v in kohya_entries(sd, table).items()}
    if path.endswith(".safetensors"):
        # A folder and weight_name: offline (HF_HUB_OFFLINE=1) diffusers wants both.
        folder, name = os.path.split(os.path.abspath(path))
        load = lambda: pipe.load_lora_weights(folder, weight_name=name, adapter_name=adapter)  # noqa: E731
    else:
        load = lambda: pipe.load_lora_weights(dict(sd), adapter_name=adapter)  # noqa: E731
    guarded(f"{path}: load_lora_weights", load)
    layers = tuner_layers(models, adapter)
    if set(layers) != set(entries):
        missing = sorted(set(entries) - set(layers))
        extra = sorted(set(layers) - set(entries))
        raise BakeError(f"{path}: diffusers applied {len(layers)} of {len(entries)} modules (missing {missing[:3]}, unexpected {extra[:3]})")
    before = {k: m.get_base_layer().weight.detach().clone() for k, m in layers.items()}
    for key, mod in layers.items():
        up, down, alpha, r = entries[key]
        dt = mod.get_base_layer().weight.dtype
        if not (torch.equal(mod.lora_A[adapter].weight, down.to(dt)) and torch.equal(mod.lora_B[adapter].weight, up.to(dt))):
            raise BakeError(f"{path}: {key} got other factors than the file's")
        if mod.r[adapter] != r or float(mod.lora_alpha[adapter]) != alpha:
            raise BakeError(f"{path}: {key}: diffusers uses r={mod.r[adapter]} alpha={mod.lora_alpha[adapter]}, file says r={r} alpha={alpha}")
    guarded(f"{path}: set_adapters", lambda: pipe.set_adapters([adapter], adapter_weights=[float(ratio)]))
    for key, mod in layers.items():
        up, down, alpha, r = entries[key]
        if mod.scaling[adapter] != scale(ratio, alpha, r):
            raise BakeError(f"{path}: {key}: scaling {mod.scaling[adapter]} != {scale(ratio, alpha, r)}")
    guarded(
        f"{path}: fuse_lora",
        lambda: pipe.fuse_lora(components=list(pipe._lora_loadable_modules), lora_scale=1.0, adapter_names=[adapter]),
    )
    fused = {k: m.get_base_layer().weight.detach().clone() for k, m in layers.items()}
    guarded(f"{path}: unload_lora_weights", pipe.unload_lora_weights)
    if tuner_layers(models, adapter):
        raise BakeError(f"{path}: LoRA layers left after unload_lora_weights")
    after = weights_of(models)
    for key in layers:
        up, down, alpha, r = entries[key]
        if not torch.equal(after[key], fused[key]):
            raise BakeError(f"{path}: {key}: unload_lora_weights changed the fused weight")
        want = expected_lora(before[key], up, down, scale(ratio, alpha, r))
        if not torch.equal(after[key], want):
            n = int((after[key] != want).sum())
            raise BakeError(f"{path}: {key}: diffusers' fused weight differs from the documented formula in {n} elements")
    return sorted(layers)


def apply_dora(models, path, sd, ratio, adapter, table):
    from diffusers.utils.peft_utils import recurse_remove_peft_layers
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    entries = kohya_entries(sd, table)
    targets = []
    for part in models:
        ents = {p: v for (pt, p), v in entries.items() if pt == part}
        if not ents:
            continue
        model = models[part]
        peft_sd = {}
        ranks, alphas = {}, {}
        for p, (up, down, alpha, r, mag) in sorted(ents.items()):
            W = model.get_submodule(p).weight
            if not isinstance(model.get_submodule(p), torch.nn.Linear):
                raise BakeError(f"{path}: DoRA on a non-Linear module ({p}) is not supported")
            if mag is None:
                raise BakeError(f"{path}: {p}: DoRA file module without dora_scale")
            if tuple(mag.shape) not in ((W.shape[0], 1), (W.shape[0],)):
                raise BakeError(f"{path}: {p}: dora_scale {tuple(mag.shape)} is not [out, 1] (out = {W.shape[0]}): input-axis DoRA is not supported")
            peft_sd[f"{p}.lora_A.weight"] = down
            peft_sd[f"{p}.lora_B.weight"] = up
            peft_sd[f"{p}.lora_magnitude_vector"] = mag.reshape(-1)
            ranks[p], alphas[p] = r, alpha
        cfg = LoraConfig(
            r=1,
            lora_alpha=1,
            # a regex string (re.fullmatch per module path) naming exactly these modules
            target_modules="|".join(re.escape(p) for p in sorted(ranks)),
            rank_pattern={re.escape(p): r for p, r in ranks.items()},
            alpha_pattern={re.escape(p): a for p, a in alphas.items()},
            use_dora=True,
            init_lora_weights=True,
        )

        def load():
            inject_adapter_in_model(cfg, model, adapter_name=adapter)
            res = set_peft_model_state_dict(model, peft_sd, adapter_name=adapter)
            if res.unexpected_keys:
                raise BakeError(f"{path}: peft did not take {res.unexpected_keys[:3]}")

        guarded(f"{path}: peft DoRA load", load)
        layers = {p: m for (pt, p), m in tuner_layers({part: model}, adapter).items()}
        if set(layers) != set(ranks):
            raise BakeError(f"{path}: peft built {sorted(layers)[:3]}... for {sorted(ranks)[:3]}...")
        for p, mod in sorted(layers.items()):
            up, down, alpha, r, mag = ents[p]
            if mod.r[adapter] != r or float(mod.lora_alpha[adapter]) != alpha:
                raise BakeError(f"{path}: {p}: peft r/alpha {mod.r[adapter]}/{mod.lora_alpha[adapter]} != {r}/{alpha}")
            if not torch.equal(mod.lora_magnitude_vector[adapter].weight, mag.reshape(-1).to(mod.get_base_layer().weight.dtype)):
                raise BakeError(f"{path}: {p}: magnitude not loaded")
            W0 = mod.get_base_layer().weight.detach().clone()
            mod.set_scale(adapter, float(ratio))
            guarded(f"{path}: DoRA merge", lambda: mod.merge(safe_merge=False, adapter_names=[adapter]))
            want = expected_dora(W0, up, down, mag, scale(ratio, alpha, r))
            got = mod.get_base_layer().weight.detach()
            if not torch.equal(got, want):
                raise BakeError(f"{path}: {p}: peft's DoRA merge differs from the documented formula in {int((got != want).sum())} elements")
            targets.append((part, p))
        recurse_remove_peft_layers(model)
        if hasattr(model, "peft_config"):
            del model.peft_config
        if tuner_layers({part: model}, adapter):
            raise BakeError(f"{path}: DoRA layers left after removal")
    return sorted(targets)


def apply_lycoris(models, path, sd, ratio, table):
    targets = []
    for name, p in sorted(group_modules(sd).items()):
        part, mpath = resolve(table, name)
        kind = lycoris_kind(sd, name)
        mod = models[part].get_submodule(mpath)
        W = mod.weight
        with torch.no_grad():
            dW, db = lycoris_delta(kind, p, W.detach(), ratio)
            if tuple(dW.shape) != tuple(W.shape):
                raise BakeError(f"{path}: {name}: ΔW {tuple(dW.shape)} != weight {tuple(W.shape)}")
            W.copy_(W + dW.to(W.dtype))
            if db is not None:
                if mod.bias is None:
                    raise BakeError(f"{path}: {name}: diff_b for a module without bias")
                mod.bias.copy_(mod.bias + db.to(mod.bias.dtype))
        targets.append((part, mpath))
    return targets


# --------------------------------------------------------------------------


def parse_lora(arg):
    path, sep, tail = arg.rpartition(":")
    if sep and path:
        try:
            return path, float(tail)
        except ValueError:
            pass
    return arg, 1.0


def bake(model_path, config_path, out_path, loras, dtype_name, out_float32=False):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with open(config_path) as f:
        configs = json.load(f)
    with safe_open(model_path, framework="pt") as f:
        ldm = {k: f.get_tensor(k) for k in f.keys()}
        model_md = f.metadata()
    mdtype = model_dtype(ldm)
    work = torch.float32 if dtype_name == "float32" else mdtype
    models = build(ldm, configs, work)

    base = to_ldm(models, configs)
    faithful = {k for k, v in base.items() if k in ldm and torch.equal(v, ldm[k].to(v.dtype) if v.is_floating_point() else ldm[k])}

    pipe = make_pipeline(models)
    table = kohya_table(models, configs)
    for i, arg in enumerate(loras):
        path, ratio = parse_lora(arg)
        if not os.path.isfile(path):
            raise BakeError(f"{path}: no such file")
        sd, metadata = read_adapter(path)
        if not sd:
            raise BakeError(f"{path}: no tensors")
        kind = classify(sd)
        before = weights_of(models)
        adapter = f"a{i}"
        if kind in ("peft", "kohya_lora"):
            targets = apply_diffusers(pipe, models, path, sd, metadata, kind, ratio, adapter, table)
        elif kind == "kohya_dora":
            targets = apply_dora(models, path, sd, ratio, adapter, table)
        else:
            targets = apply_lycoris(models, path, sd, ratio, table)
        after = weights_of(models)
        if ratio != 0:
            unchanged = [t for t in targets if torch.equal(before[t], after[t])]
            if unchanged:
                raise BakeError(f"{path}: {len(unchanged)} targeted modules unchanged, e.g. {unchanged[0]}")
        others = [k for k in before if k not in set(targets) and not torch.equal(before[k], after[k])]
        if others:
            raise BakeError(f"{path}: modules it does not target changed, e.g. {others[0]}")
        maxd = max(float((after[t].float() - before[t].float()).abs().max()) for t in targets)
        print(f"{path}: {kind}, ratio {ratio}: {len(targets)} modules, max |Δ| {maxd:.4g}", file=sys.stderr)

    baked = to_ldm(models, configs)
    out = {}
    changed = 0
    for k, v in ldm.items():
        if out_float32 and v.is_floating_point():
            v = v.float()
        if k in faithful:
            nv = baked[k].to(v.dtype)
            changed += int(not torch.equal(nv, v))
            out[k] = nv.contiguous()
        else:
            if k in baked and not torch.equal(baked[k], base[k]):
                raise BakeError(f"{k}: baked, but diffusers' conversion does not round-trip it bit-exactly")
            out[k] = v
    save_file(out, out_path, metadata=model_md)
    print(f"wrote {out_path}: {len(out)} tensors, {changed} changed", file=sys.stderr)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=["model", "float32"], default="model", help="working dtype (default: MODEL's)")
    ap.add_argument("--out-float32", action="store_true", help="write floating tensors as float32 (with --dtype float32: the float32 bake itself, not cast back)")
    ap.add_argument("model")
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("loras", nargs="+", metavar="LORA[:RATIO]")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        bake(args.model, args.config, args.out, args.loras, args.dtype, args.out_float32)
    except SystemExit as e:
        if e.code not in (0, None) and not isinstance(e.code, int):
            print(f"bake_ref: error: {str(e.code).replace(chr(10), ' ')}", file=sys.stderr)
            sys.exit(1)
        raise
    except Exception as e:  # noqa: BLE001 - one line, non-zero, whatever failed
        print(f"bake_ref: error: {type(e).__name__}: {str(e).replace(chr(10), ' ')}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
