#!/usr/bin/env python3
"""Do two safetensors checkpoints agree within the bake tolerances?

    $(tests/python/venv.sh) tests/python/compare_close.py OURS REF [--ulp-share F] [--max-ulp N]

Same keys, dtypes and shapes are required. Then per tensor:

* float32 / float64: max|ours - ref| / max|ref| < 1e-6 (relative to the tensor's largest
  value, so elements near zero do not blow the ratio up);
* float16 / bfloat16 and everything else: equal bit for bit, except that with
  --ulp-share F up to that share of a half-precision tensor's elements may be up to
  --max-ulp (default 1) units in the last place apart (a sum whose terms torch orders
  differently, e.g. torch.einsum's Tucker products, can round the other way; adapters baked
  after it round from there).

Prints one line per failing tensor and a summary; exit status 1 on any failure, 2 when a
file cannot be read.
"""

import argparse
import sys

import torch
from safetensors.torch import load_file


def ulps(a, b):
    bits = torch.int16
    ia = a.contiguous().view(bits).to(torch.int32)
    ib = b.contiguous().view(bits).to(torch.int32)
    # Map sign-magnitude to a monotone integer line.
    ia = torch.where(ia < 0, -32768 - ia, ia)
    ib = torch.where(ib < 0, -32768 - ib, ib)
    return (ia - ib).abs()


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("ref")
    ap.add_argument("--ulp-share", type=float, default=0.0)
    ap.add_argument("--max-ulp", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        a, b = load_file(args.ours), load_file(args.ref)
    except Exception as e:  # noqa: BLE001
        print(f"error: cannot load: {e}")
        return 2
    bad = []
    if a.keys() != b.keys():
        bad.append(f"keys differ: only in ours {sorted(a.keys() - b.keys())[:3]}, only in ref {sorted(b.keys() - a.keys())[:3]}")
    worst = 0.0
    for k in sorted(a.keys() & b.keys()):
        x, y = a[k], b[k]
        if x.dtype != y.dtype or x.shape != y.shape:
            bad.append(f"{k}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}")
            continue
        if torch.equal(x.view(torch.uint8) if x.dim() else x.reshape(1).view(torch.uint8),
                       y.view(torch.uint8) if y.dim() else y.reshape(1).view(torch.uint8)):
            continue
        if x.dtype in (torch.float32, torch.float64):
            scale = float(y.abs().max()) or 1.0
            rel = float((x.double() - y.double()).abs().max()) / scale
            worst = max(worst, rel)
            if not rel < 1e-6:
                bad.append(f"{k}: relative error {rel:.3g}")
        elif x.dtype in (torch.float16, torch.bfloat16):
            u = ulps(x, y)
            share = float((u > 0).sum()) / u.numel()
            if int(u.max()) > args.max_ulp or share > args.ulp_share:
                bad.append(f"{k}: {int((u > 0).sum())} of {u.numel()} elements differ, up to {int(u.max())} ulp")
        else:
            bad.append(f"{k}: {x.dtype} values differ")
    for line in bad:
        print(line)
    print(f"{'FAIL' if bad else 'ok'}: {len(a)} tensors, worst float32 relative error {worst:.3g}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
