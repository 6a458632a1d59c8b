"""torch's side of bench/scale_tensors.sh: time torch.load and torch.save of a checkpoint of
many tiny tensors, and check ldmkit's file holds what the generator wrote.

Usage: torch_tiny_tensors.py CKPT OUT. CKPT is ldmkit's strip of a file made by
gen_tiny_tensors.py with seed 0 (`{"state_dict": {name: tensor}}`, tensor i holding i / 2);
OUT receives torch.save of what torch.load returned. Prints one line of JSON: load_s,
save_s (in-process seconds, `import torch` excluded), tensors, values_ok.
"""

import json
import sys
import time

import torch


def main():
    ckpt, out = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    t1 = time.perf_counter()
    torch.save(obj, out)
    t2 = time.perf_counter()
    sd = obj["state_dict"]
    values = torch.cat([v.reshape(-1) for v in sd.values()])
    ok = torch.equal(values, torch.arange(len(sd), dtype=torch.float32) * 0.5)
    print(
        json.dumps(
            {
                "load_s": round(t1 - t0, 3),
                "save_s": round(t2 - t1, 3),
                "tensors": len(sd),
                "values_ok": ok,
            }
        )
    )


if __name__ == "__main__":
    main()
