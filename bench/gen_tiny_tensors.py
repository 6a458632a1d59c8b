"""Write a safetensors file of N one-element float32 tensors (stdlib only).

Usage: gen_tiny_tensors.py N OUT [SEED]. Keys are UNet-style
(`model.diffusion_model.input_blocks.{i}.0.weight`), so each tensor is a block of its own
and `diff` has N blocks to group; they sort in the order they are written. SEED shifts
the values so that two files differ.
"""

import json
import struct
import sys


def main():
    n, out = int(sys.argv[1]), sys.argv[2]
    seed = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    width = len(str(n))
    header = {}
    for i in range(n):
        header[f"model.diffusion_model.input_blocks.{i:0{width}d}.0.weight"] = {
            "dtype": "F32",
            "shape": [1],
            "data_offsets": [4 * i, 4 * i + 4],
        }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(struct.pack(f"<{n}f", *(i * 0.5 + seed for i in range(n))))


if __name__ == "__main__":
    main()
