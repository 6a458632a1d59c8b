#!/usr/bin/env python3
"""The seed's Python method: reference checkpoint rewrites done the way the
community scripts do them (torch.load, dict pops, torch.save).

    PY=$(tests/python/venv.sh | tail -1)
    $PY tests/python/seed.py strip IN OUT [--ema] [--dtype f16|bf16|f32] [--mmap]
    $PY tests/python/seed.py merge TRAINING BASE OUT [--ema | --keep-ema] [--dtype ...] [--mmap]
    $PY tests/python/seed.py graft BASE TRAINING OUT [--force] [--mmap]
    $PY tests/python/seed.py cast IN OUT --dtype f16|bf16|f32 [--mmap]
    $PY tests/python/seed.py weighted-sum A B OUT --alpha X [--dtype ...]
    $PY tests/python/seed.py add-difference A B C OUT --alpha X [--dtype ...]

ldmkit's `strip`, `merge`, `graft` and `cast` must produce files whose tensors
equal this script's output tensor for tensor, bit for bit (check with
tests/python/compare.py; `--tree` for graft and cast, whose whole object must
survive). So this file is a specification: keep it short and obviously
right, and change it only together with the Rust side.

Exact behaviour:

  Loading. A file whose content sniffs as safetensors (as in walk.py) is
  read with safetensors.torch.load_file; its dict order is load_file's
  (data-offset order in safetensors 0.6.2, neither header nor sorted order).
  Anything else: torch.load(path, map_location="cpu", weights_only=False,
  mmap=<--mmap>). The "state dict" of a loaded object is obj["state_dict"]
  if obj is a dict with that key, else obj itself.

  strip IN OUT: sd = state dict of IN. With --ema: for every key k that
  starts with "model.", ema = "model_ema." + k[len("model."):] with the dots
  removed (LitEma's buffer name); if ema is in sd, sd[k] = sd[ema]. If no
  key k has such an EMA key, exit 2. Then every "model_ema." key is dropped
  (with or without --ema). Then --dtype, then save.

  merge TRAINING BASE OUT: sd = state dict of TRAINING (order kept); each
  key of BASE's state dict that sd lacks is appended, in BASE's order, with
  BASE's tensor. Existing keys keep TRAINING's tensor. EMA: by default every
  "model_ema." key is dropped; --ema swaps them in as in strip, then drops
  them (exit 2 if there is nothing to swap); --keep-ema keeps them as they
  are. Then --dtype, then save.

  --dtype (strip, merge): every floating-point tensor of the state dict is
  replaced by tensor.to(dtype); integer/bool tensors (position_ids,
  num_updates) are left alone. f32 -> f32 is a no-op.

  Save (strip, merge): OUT ending in ".safetensors" ->
  safetensors.torch.save_file({k: v.contiguous()}, OUT) (no metadata; it
  refuses tensors that share storage). Otherwise
  torch.save({"state_dict": sd}, OUT) with sd the loaded (Ordered)dict
  mutated in place: it stays an OrderedDict when torch.load gave one, and
  keeps its instance attributes, i.e. a Lightning state_dict's `_metadata`
  (per-module {"version": 1} dicts, EMA module entries included) that
  OrderedDict pickles along. Storages shared between kept tensors stay
  shared (torch.load restores sharing, torch.save writes it back).

  weighted-sum A B OUT / add-difference A B C OUT (AUTOMATIC1111's checkpoint
  merger formulas): sd = A's state dict without "model_ema." keys (B's and
  C's likewise). For each key of A that B has (and C, for add-difference),
  when both tensors are floating point and of one shape:
  (1-alpha)*a + alpha*b, or a + (b-c)*alpha, computed in float32 (a.float(),
  operations in that order) and rounded once to A's dtype. A shape mismatch
  exits 2; integer tensors and keys B lacks keep A's tensor; keys only in B
  are appended. Then --dtype, then save.

  graft BASE TRAINING OUT: ck = the whole TRAINING object, kept as loaded
  (optimizer_states, lr_schedulers, callbacks, loops, hyper_parameters,
  epoch, global_step, ...). For every key k of ck["state_dict"] (order kept)
  that does not start with "cond_stage_model." and is in BASE's state dict:
  if shape or dtype differ the key is a mismatch, else
  ck["state_dict"][k] = base[k]. Keys only in BASE are not added. Any
  mismatch without --force: print one line per mismatch, write nothing,
  exit 2. With --force mismatched keys get BASE's tensor verbatim too.
  torch.save(ck, OUT).

  cast IN OUT --dtype: the whole object is kept; every floating-point tensor
  reachable through dicts (any dict subclass, order kept), lists, tuples and
  the __dict__ of plain objects (argparse.Namespace) is replaced by
  tensor.to(dtype), state_dict, optimizer state (including AdamW's float
  `step`), callback scores alike; an nn.Parameter stays an nn.Parameter
  with the same requires_grad. One tensor object reached twice is cast
  once, so tied tensors stay tied; views of one storage become separate
  storages. OmegaConf nodes are not entered (they cannot hold tensors).
  torch.save(obj, OUT); a safetensors IN is cast and saved as in strip.

Exit status: 0 ok, 2 error (message on stderr, nothing written).
"""

import argparse
import os
import sys

import torch

from sniff import is_safetensors

DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}
EMA_PREFIX = "model_ema."


class Fail(Exception):
    pass




def load(path, mmap=False):
    if is_safetensors(path):
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)


def state_dict_of(obj):
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj["state_dict"]
    return obj


def ema_key(k):
    return EMA_PREFIX + k[len("model.") :].replace(".", "")


def swap_ema(sd):
    swapped = 0
    for k in list(sd):
        if k.startswith("model."):
            ema = ema_key(k)
            if ema in sd:
                sd[k] = sd[ema]
                swapped += 1
    if not swapped:
        raise Fail("--ema: no model.* key has a model_ema.* counterpart")


def drop_ema(sd):
    for k in [k for k in sd if k.startswith(EMA_PREFIX)]:
        del sd[k]


def cast_state_dict(sd, dtype):
    if dtype is None:
        return
    for k, v in sd.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            sd[k] = v.to(dtype)


def save_state_dict(sd, out):
    if out.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, out)
    else:
        torch.save({"state_dict": sd}, out)


def cmd_strip(a):
    sd = state_dict_of(load(a.input, a.mmap))
    if a.ema:
        swap_ema(sd)
    drop_ema(sd)
    cast_state_dict(sd, DTYPES.get(a.dtype))
    save_state_dict(sd, a.output)
    print(f"strip: {len(sd)} tensors -> {a.output}")


def cmd_merge(a):
    sd = state_dict_of(load(a.training, a.mmap))
    base = state_dict_of(load(a.base, a.mmap))
    added = 0
    for k, v in base.items():
        if k not in sd:
            sd[k] = v
            added += 1
    del base
    if a.ema:
        swap_ema(sd)
    if not a.keep_ema:
        drop_ema(sd)
    cast_state_dict(sd, DTYPES.get(a.dtype))
    save_state_dict(sd, a.output)
    print(f"merge: {len(sd)} tensors ({added} from base) -> {a.output}")


def cmd_graft(a):
    base = state_dict_of(load(a.base, a.mmap))
    ck = load(a.training, a.mmap)
    if not (isinstance(ck, dict) and "state_dict" in ck):
        raise Fail(f"{a.training}: not a training checkpoint (no 'state_dict' key)")
    sd = ck["state_dict"]
    mismatches, grafted = [], 0
    for k in list(sd):
        if k.startswith("cond_stage_model.") or k not in base:
            continue
        old, new = sd[k], base[k]
        if tuple(old.shape) != tuple(new.shape) or old.dtype != new.dtype:
            mismatches.append(
                f"mismatch: {k}: training {str(old.dtype)[6:]}{list(old.shape)}, "
                f"base {str(new.dtype)[6:]}{list(new.shape)}"
            )
            if not a.force:
                continue
        sd[k] = new
        grafted += 1
    if mismatches and not a.force:
        for m in mismatches:
            print(m)
        raise Fail(f"{len(mismatches)} shape/dtype mismatches (use --force to copy them anyway)")
    torch.save(ck, a.output)
    forced = f", {len(mismatches)} forced" if mismatches else ""
    print(f"graft: {grafted} tensors from base{forced} -> {a.output}")


def cast_tree(obj, dtype, memo, on_path):
    """Cast every floating tensor reachable from obj; returns the new obj.
    Containers are rebuilt with their own type (dict subclasses keep their
    class and order; defaultdicts their default_factory)."""
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            new = obj
            if obj.is_floating_point():
                new = obj.to(dtype)
                if isinstance(obj, torch.nn.Parameter):  # .to() returns a plain Tensor
                    new = torch.nn.Parameter(new, requires_grad=obj.requires_grad)
            memo[id(obj)] = (obj, new)
        return memo[id(obj)][1]
    if id(obj) in on_path:  # cyclic containers: leave the back edge alone
        return obj
    if isinstance(obj, dict):
        on_path.add(id(obj))
        for k in list(obj):
            obj[k] = cast_tree(obj[k], dtype, memo, on_path)
        on_path.discard(id(obj))
        return obj
    if isinstance(obj, list):
        on_path.add(id(obj))
        for i, v in enumerate(obj):
            obj[i] = cast_tree(v, dtype, memo, on_path)
        on_path.discard(id(obj))
        return obj
    if isinstance(obj, tuple):
        on_path.add(id(obj))
        items = [cast_tree(v, dtype, memo, on_path) for v in obj]
        on_path.discard(id(obj))
        if all(x is y for x, y in zip(items, obj)):
            return obj
        return type(obj)(*items) if hasattr(obj, "_fields") else type(obj)(items)
    if type(obj).__module__.startswith("omegaconf") or isinstance(obj, type):
        return obj
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        on_path.add(id(obj))
        for k in list(d):
            d[k] = cast_tree(d[k], dtype, memo, on_path)
        on_path.discard(id(obj))
    return obj


def cmd_cast(a):
    dtype = DTYPES[a.dtype]
    obj = load(a.input, a.mmap)
    if is_safetensors(a.input):
        cast_state_dict(obj, dtype)
        save_state_dict(obj, a.output)
        print(f"cast: {len(obj)} tensors -> {a.output}")
        return
    memo = {}
    obj = cast_tree(obj, dtype, memo, set())
    torch.save(obj, a.output)
    n = sum(1 for old, new in memo.values() if new is not old)
    print(f"cast: {n} of {len(memo)} tensors cast to {a.dtype} -> {a.output}")


def arith_inputs(paths, mmap):
    sds = []
    for p in paths:
        sd = state_dict_of(load(p, mmap))
        drop_ema(sd)
        sds.append(sd)
    return sds


def combine(a, others, formula, dtype, out):
    sd = a
    for k in list(sd):
        ts = [o.get(k) for o in others]
        if any(t is None for t in ts):
            continue
        x = sd[k]
        if not x.is_floating_point() or not all(t.is_floating_point() for t in ts):
            continue
        if any(t.shape != x.shape for t in ts):
            raise Fail(f"{k}: shapes {tuple(x.shape)} and {[tuple(t.shape) for t in ts]}")
        sd[k] = formula(x.float(), *[t.float() for t in ts]).to(x.dtype)
    for k, v in others[0].items():
        if k not in sd:
            sd[k] = v
    if dtype:
        cast_state_dict(sd, DTYPES[dtype])
    save_state_dict(sd, out)
    print(f"{len(sd)} tensors -> {out}")


def cmd_weighted_sum(a):
    sa, sb = arith_inputs([a.a, a.b], a.mmap)
    combine(sa, [sb], lambda x, y: (1 - a.alpha) * x + a.alpha * y, a.dtype, a.output)


def cmd_add_difference(a):
    sa, sb, sc = arith_inputs([a.a, a.b, a.c], a.mmap)
    combine(sa, [sb, sc], lambda x, y, z: x + (y - z) * a.alpha, a.dtype, a.output)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--mmap", action="store_true", help="torch.load(mmap=True) (not used for safetensors)")

    p = sub.add_parser("strip", help="drop EMA (optionally swap it in) and everything outside state_dict")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--ema", action="store_true", help="replace model.* weights by their model_ema.* copies")
    p.add_argument("--dtype", choices=DTYPES)
    common(p)
    p.set_defaults(fn=cmd_strip)

    p = sub.add_parser("merge", help="training state_dict + keys only the base has")
    p.add_argument("training")
    p.add_argument("base")
    p.add_argument("output")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ema", action="store_true", help="swap model_ema.* in, then drop it")
    g.add_argument("--keep-ema", action="store_true", help="keep model_ema.* keys")
    p.add_argument("--dtype", choices=DTYPES)
    common(p)
    p.set_defaults(fn=cmd_merge)

    p = sub.add_parser("graft", help="base weights into a training checkpoint, training state kept")
    p.add_argument("base")
    p.add_argument("training")
    p.add_argument("output")
    p.add_argument("--force", action="store_true", help="copy shape/dtype-mismatched base tensors anyway")
    common(p)
    p.set_defaults(fn=cmd_graft)

    p = sub.add_parser("cast", help="cast every floating tensor of the whole object")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--dtype", choices=DTYPES, required=True)
    common(p)
    p.set_defaults(fn=cmd_cast)

    p = sub.add_parser("weighted-sum", help="A1111 weighted sum (1-alpha)*A + alpha*B")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("output")
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--dtype", choices=DTYPES)
    common(p)
    p.set_defaults(fn=cmd_weighted_sum)

    p = sub.add_parser("add-difference", help="A1111 add difference A + (B-C)*alpha")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("c")
    p.add_argument("output")
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--dtype", choices=DTYPES)
    common(p)
    p.set_defaults(fn=cmd_add_difference)

    a = ap.parse_args(argv)
    try:
        a.fn(a)
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
