#!/usr/bin/env python3
"""Load checkpoints the way a careful user does: torch.load(weights_only=True).

    $(tests/python/venv.sh) tests/python/weights_only.py [--training] PATH...

Every release .ckpt ldmkit writes must load this way (its outputs keep only tensors and
allowlisted containers). With --training, the Lightning/OmegaConf classes ldmkit's training
extension names are added to torch's safe globals first: what `graft` may keep. Prints one
line per file that fails and exits 1 if any does, or if a payload marker
(/tmp/ldmkit-pwned-*) appeared while loading.
"""

import glob
import sys

import torch


def training_globals():
    import collections
    import typing

    import omegaconf
    from omegaconf import base, dictconfig, listconfig, nodes

    return [
        dictconfig.DictConfig,
        listconfig.ListConfig,
        base.ContainerMetadata,
        base.Metadata,
        nodes.AnyNode,
        nodes.StringNode,
        nodes.IntegerNode,
        nodes.FloatNode,
        nodes.BooleanNode,
        nodes.BytesNode,
        nodes.PathNode,
        typing.Any,
        collections.defaultdict,
        dict,
        list,
        tuple,
        int,
        float,
        str,
        bool,
    ]


def main():
    args = sys.argv[1:]
    training = "--training" in args
    paths = [a for a in args if a != "--training"]
    before = set(glob.glob("/tmp/ldmkit-pwned-*"))
    if training:
        torch.serialization.add_safe_globals(training_globals())
    failed = 0
    for path in paths:
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(f"{path}: {type(e).__name__}: {first}")
            failed += 1
    new = set(glob.glob("/tmp/ldmkit-pwned-*")) - before
    if new:
        print(f"payload markers appeared: {sorted(new)}")
        failed += 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
