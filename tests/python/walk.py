#!/usr/bin/env python3
"""Reference tensor listing for a checkpoint, computed the slow, trusted way.

    $(tests/python/venv.sh) tests/python/walk.py FILE

Prints ONE JSON object on stdout:

    {"tensors": [{"name": ..., "dtype": ..., "shape": [...], "bytes": N}, ...]}

sorted by name. The Rust reader must produce the same list from the same file
without executing the pickle, so the naming rule below is a contract, not an
implementation detail; change it only together with the Rust side.

Naming rule:
  * safetensors: the tensor's key, as-is.
  * torch.load output: the path of dict keys / list and tuple indices from the
    top-level object down to the tensor, joined with "/". Dict keys render as
    str -> itself, bool -> "True"/"False", int -> decimal, a class object ->
    "module.qualname" (old Lightning keyed `callbacks` by callback class),
    anything else -> str(key).
  * Objects that are not dict/list/tuple but carry an instance ``__dict__``
    (argparse.Namespace, OmegaConf nodes, ...) are walked through vars(obj),
    whose keys follow the dict-key rule. The Rust side sees these as the state
    passed to BUILD.
  * A tensor reachable by several paths (tied weights) is listed once per path.
  * A container already on the current path is not entered again (pickles can
    be cyclic: OmegaConf children point back at their parent).

dtype is str(tensor.dtype) without "torch."; bytes is numel * element_size
(the logical size of the tensor, not of its possibly larger storage).
"""

import json
import sys

from sniff import is_safetensors




def key_name(k):
    # bool before int: bool is a subclass of int but renders as True/False.
    if isinstance(k, bool):
        return "True" if k else "False"
    if isinstance(k, str):
        return k
    if isinstance(k, int):
        return str(k)
    if isinstance(k, type):
        return f"{k.__module__}.{k.__qualname__}"
    return str(k)


def children(obj):
    """(name, child) pairs of a container, or None for a leaf."""
    if isinstance(obj, dict):
        return [(key_name(k), v) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    # Classes expose a mappingproxy, not a dict: they are leaves.
    d = getattr(obj, "__dict__", None)
    if isinstance(d, dict):
        return [(key_name(k), v) for k, v in d.items()]
    return None


def walk(obj, torch):
    out = []
    on_path = set()

    # Iterative rather than recursive so a deeply nested object cannot hit
    # Python's recursion limit. Each frame: (path, iterator over children).
    def enter(path, node):
        if isinstance(node, torch.Tensor):
            out.append(describe(path, node))
            return None
        kids = children(node)
        if kids is None or id(node) in on_path:
            return None
        on_path.add(id(node))
        return (path, node, iter(kids))

    stack = []
    frame = enter([], obj)
    if frame:
        stack.append(frame)
    while stack:
        path, node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            on_path.discard(id(node))
            stack.pop()
            continue
        name, child = nxt
        frame = enter(path + [name], child)
        if frame:
            stack.append(frame)
    return out


def describe(path, t):
    return {
        "name": "/".join(path),
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": [int(s) for s in t.shape],
        "bytes": t.numel() * t.element_size(),
    }


def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} FILE", file=sys.stderr)
        return 2
    path = argv[1]
    import torch

    if is_safetensors(path):
        from safetensors.torch import load_file

        tensors = [describe([k], v) for k, v in load_file(path).items()]
    else:
        # weights_only=False: real SD checkpoints reference Lightning
        # callbacks, numpy scalars and OmegaConf, which the allowlist rejects.
        # Only ever run this on our own fixtures.
        obj = torch.load(path, map_location="cpu", weights_only=False)
        tensors = walk(obj, torch)
    tensors.sort(key=lambda t: t["name"])
    json.dump({"tensors": tensors}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
