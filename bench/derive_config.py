#!/usr/bin/env python3
"""Write the diffusers / transformers configs of an LDM/SGM single-file
checkpoint, as tests/python/bake_ref.py's CONFIG wants them.

    $PY bench/derive_config.py MODEL.safetensors OUT.json

Reads only MODEL's safetensors header (names, shapes) and runs
tests/python/ldm_reference.derive_configs on meta tensors: {"unet", "vae",
"text_encoder"[, "text_encoder_2"]}.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "python"))

import gen_lora  # noqa: E402
import ldm_reference as ref  # noqa: E402


def main(argv):
    if len(argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[3].strip())
    model, out = argv
    configs = ref.derive_configs(gen_lora.meta_of(model))
    with open(out, "w") as f:
        json.dump(configs, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {out}: {', '.join(configs)}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
