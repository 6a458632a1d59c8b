#!/usr/bin/env python3
"""Print the hashes web UIs and model sites use for a model / LoRA file, one
JSON object per file (one line each):

    $(tests/python/venv.sh) tests/python/adapter_hashes.py FILE...

    {"file": FILE, "sha256": ..., "autov2": ..., "autov3": ..., "legacy": ...}

* sha256: of the whole file (A1111 modules/hashes.py calculate_sha256).
* autov2: its first 10 hex digits (A1111's shorthash for checkpoints,
  hashes.sha256(...)[0:10]; Civitai's "AutoV2").
* autov3: for .safetensors files, sha256 of the bytes after the header, i.e.
  from offset 8 + N where N is the little-endian u64 in bytes 0..8 (A1111
  modules/hashes.py addnet_hash_safetensors, copied from kohya-ss/sd-scripts
  library/train_util.py; the value sd-scripts stores as sshs_model_hash; A1111
  shows its first 12 digits as a LoRA's shorthash). Decided by the file name,
  as A1111 does (use_addnet_hash for .safetensors). Nothing is validated: an
  N past the end hashes b"". null for other files.
* legacy: A1111's old model_hash (modules/sd_models.py): sha256 of what
  file.read(0x10000) returns after file.seek(0x100000), first 8 hex digits.
  For a file shorter than 1 MiB the read returns b"", so this is
  sha256(b"")[:8] = "e3b0c442"; between 1 MiB and 1 MiB + 64 KiB it hashes
  the tail. (sd-scripts' sshs_legacy_hash is the same function applied to an
  in-memory serialization carrying only the ss_* metadata.)
"""

import hashlib
import json
import sys


def hashes(path):
    with open(path, "rb") as f:
        data = f.read()
    out = {"file": path}
    full = hashlib.sha256(data).hexdigest()
    out["sha256"] = full
    out["autov2"] = full[:10]
    if path.lower().endswith(".safetensors"):
        n = int.from_bytes(data[:8], "little")
        out["autov3"] = hashlib.sha256(data[8 + n :]).hexdigest()
    else:
        out["autov3"] = None
    out["legacy"] = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    return out


def main(argv):
    if not argv:
        print("usage: adapter_hashes.py FILE...", file=sys.stderr)
        return 2
    for path in argv:
        try:
            print(json.dumps(hashes(path)))
        except OSError as e:
            print(f"adapter_hashes: error: {path}: {e.strerror}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
