"""Content sniffing shared by the Python references (walk.py, seed.py, compare.py).

A file is read as safetensors when it starts as the Rust side detects it: an 8-byte
little-endian header length that fits in the file, followed by a JSON object. Everything else
goes to torch.load.
"""

import struct


def is_safetensors(path):
    with open(path, "rb") as f:
        head = f.read(9)
        f.seek(0, 2)
        size = f.tell()
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 0 < n <= size - 8
