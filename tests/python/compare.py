#!/usr/bin/env python3
"""Are two checkpoints equal, tensor for tensor and bit for bit?

    PY=$(tests/python/venv.sh | tail -1)
    $PY tests/python/compare.py A B [--tree] [--weights-only] [--mmap]

The judge between ldmkit's rewrites and tests/python/seed.py (the seed's
Python method): both outputs are loaded with the real libraries and compared
here, so "ldmkit equals Python" means what Python itself sees.

Loading: a file whose content sniffs as safetensors (as in walk.py) is read
with safetensors.torch.load_file (--weights-only and --mmap do not apply);
anything else with torch.load(path, map_location="cpu",
weights_only=<--weights-only>, mmap=<--mmap>). If either load fails, one line
"error: cannot load FILE: ..." is printed and the exit status is 2. So
`--weights-only` doubles as the proof that a file loads under torch's
weights-only unpickler.

Default mode compares state dicts: obj["state_dict"] if obj is a dict with
that key, else obj. Only tensor values count; a state dict that holds
non-tensor values gets a note on stderr listing how many were skipped.
Reported: keys only in A, keys only in B, and per common key a dtype, shape
or data difference. Data is compared as raw bytes (the tensor flattened,
made contiguous and viewed as uint8), so -0.0 != 0.0, NaN payloads count,
and bf16/f16 compare exactly. Key ORDER is ignored in this mode; strides,
storage offsets, sharing between tensors and the Tensor/Parameter class are
not compared (the bytes are).

--tree compares the whole loaded objects recursively:
  * types must be identical (dict != OrderedDict, Tensor != Parameter,
    int != bool);
  * dicts: same keys in the same order (a key-order difference is reported
    once, then values are compared key by key), lists and tuples elementwise
    with equal length;
  * tensors as in default mode (dtype, shape, bytes) plus requires_grad;
  * float by its IEEE-754 bits, other scalars/str/bytes/None by ==, numpy
    arrays and scalars by dtype, shape and bytes, sets by ==;
  * classes, functions and modules by identity (same qualified name);
    torch.dtype/Size/device by ==;
  * OmegaConf DictConfig/ListConfig by OmegaConf.to_container(resolve=False)
    (the container's parent pointers and flags are not compared);
  * any other object by its instance __dict__ (vars), or, lacking one, repr;
    dicts with instance attributes (a module state_dict OrderedDict's
    `_metadata`) have those compared too, under "PATH/.__dict__";
  * storage sharing: tensors sharing one storage in A must share one in B
    and vice versa (tied weights, views); offsets/strides are not compared.
  A pair of containers already being compared higher up the path is assumed
  equal (cyclic objects terminate).

Output: one line per difference, at most 50 (then "... N more"), exit 1;
otherwise "equal: N tensors" (tensors compared) and exit 0.
"""

import argparse
import signal
import struct
import sys
import types

import torch

from sniff import is_safetensors

MAX_LINES = 50




def load(path, weights_only, mmap):
    try:
        if is_safetensors(path):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - any load failure is a verdict
        msg = str(e)
        # torch's weights-only failure is a long multi-line text; its one
        # informative line is "WeightsUnpickler error: Unsupported global: ...".
        lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
        pick = next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else "")
        print(f"error: cannot load {path}: {type(e).__name__}: {pick}")
        sys.exit(2)


def tensor_bytes(t):
    # The values torch gives: neg / conj view bits resolved (the bytes under them differ).
    return t.detach().resolve_neg().resolve_conj().reshape(-1).contiguous().view(torch.uint8)


def dname(t):
    return str(t.dtype).replace("torch.", "")


class Cmp:
    def __init__(self):
        self.diffs = []
        self.tensors = 0
        self.on_path = set()
        self.storages = []  # (path, storage of A's tensor, storage of B's tensor)

    def diff(self, path, msg):
        self.diffs.append(f"{path or '<root>'}: {msg}")

    def tensor(self, path, a, b, tree):
        self.tensors += 1
        if tree:
            self.storages.append((path, storage_id(a), storage_id(b)))
        if a.dtype != b.dtype:
            self.diff(path, f"dtype {dname(a)} != {dname(b)}")
            return
        if tuple(a.shape) != tuple(b.shape):
            self.diff(path, f"shape {list(a.shape)} != {list(b.shape)}")
            return
        if tree and a.requires_grad != b.requires_grad:
            self.diff(path, f"requires_grad {a.requires_grad} != {b.requires_grad}")
        if a.device.type == "meta" or b.device.type == "meta":
            self.diff(path, "meta tensor (no data)")
            return
        ba, bb = tensor_bytes(a), tensor_bytes(b)
        if not torch.equal(ba, bb):
            n = int((ba != bb).sum())
            first = int((ba != bb).nonzero()[0, 0])
            self.diff(path, f"data differs: {n} of {ba.numel()} bytes, first at byte {first} ({dname(a)}{list(a.shape)})")

    def sharing(self):
        """Tensors that share a storage in A must share one in B and vice
        versa (tied weights, views); offsets within it are not compared."""
        for side, own, other in (("A", 1, 2), ("B", 2, 1)):
            groups = {}
            for rec in self.storages:
                if rec[own] is not None:
                    groups.setdefault(rec[own], []).append(rec)
            for recs in groups.values():
                if len({r[other] for r in recs}) > 1:
                    paths = ", ".join(r[0] for r in recs[:4]) + (", ..." if len(recs) > 4 else "")
                    self.diff(recs[0][0], f"storage sharing differs: these share one storage only in {side}: {paths}")

    # -- default mode -----------------------------------------------------

    def state_dicts(self, a, b):
        sa, sb = tensors_only(a, "A"), tensors_only(b, "B")
        for k in sa:
            if k not in sb:
                self.diff(render(k), "only in A")
        for k in sb:
            if k not in sa:
                self.diff(render(k), "only in B")
        for k in sa:
            if k in sb:
                self.tensor(render(k), sa[k], sb[k], tree=False)

    # -- --tree mode --------------------------------------------------------

    def tree(self, path, a, b):
        if type(a) is not type(b):
            self.diff(path, f"type {qualname(type(a))} != {qualname(type(b))}")
            return
        if isinstance(a, torch.Tensor):
            self.tensor(path, a, b, tree=True)
            return
        if isinstance(a, float):
            if struct.pack("<d", a) != struct.pack("<d", b):
                self.diff(path, f"{a!r} != {b!r}")
            return
        if a is None or isinstance(a, (bool, int, complex, str, bytes, bytearray)):
            if a != b:
                self.diff(path, f"{short(a)} != {short(b)}")
            return
        if isinstance(a, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            if a is not b:
                self.diff(path, f"{short(a)} is not {short(b)}")
            return
        if isinstance(a, (torch.dtype, torch.device)):
            if a != b:
                self.diff(path, f"{short(a)} != {short(b)}")
            return
        key = (id(a), id(b))
        if key in self.on_path:
            return
        self.on_path.add(key)
        try:
            self.container(path, a, b)
        finally:
            self.on_path.discard(key)

    def container(self, path, a, b):
        import numpy as np

        if isinstance(a, dict):
            ka, kb = list(a), list(b)
            if ka != kb:
                sa, sb = set(map(keyid, ka)), set(map(keyid, kb))
                for k in ka:
                    if keyid(k) not in sb:
                        self.diff(join(path, k), "only in A")
                for k in kb:
                    if keyid(k) not in sa:
                        self.diff(join(path, k), "only in B")
                if sa == sb:
                    self.diff(path, "same keys, different order")
            bkeys = {keyid(k): k for k in kb}
            for k in ka:
                if keyid(k) in bkeys:
                    self.tree(join(path, k), a[k], b[bkeys[keyid(k)]])
            if hasattr(a, "default_factory") and a.default_factory is not b.default_factory:
                self.diff(path, f"default_factory {short(a.default_factory)} != {short(b.default_factory)}")
            # An OrderedDict pickles its instance attributes too: a module
            # state_dict's `_metadata` (per-module versions) lives there.
            va, vb = getattr(a, "__dict__", {}), getattr(b, "__dict__", {})
            if va or vb:
                self.tree(f"{path}/.__dict__" if path else ".__dict__", dict(va), dict(vb))
            return
        if isinstance(a, (list, tuple)):
            if len(a) != len(b):
                self.diff(path, f"length {len(a)} != {len(b)}")
            for i, (x, y) in enumerate(zip(a, b)):
                self.tree(join(path, i), x, y)
            return
        if isinstance(a, (set, frozenset)):
            if a != b:
                self.diff(path, f"{short(a)} != {short(b)}")
            return
        if isinstance(a, (np.ndarray, np.generic)):
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                self.diff(path, f"numpy {a.dtype}{list(a.shape)} != {b.dtype}{list(b.shape)} or data differs")
            return
        if type(a).__module__.startswith("omegaconf"):
            from omegaconf import OmegaConf

            self.tree(path, OmegaConf.to_container(a, resolve=False), OmegaConf.to_container(b, resolve=False))
            return
        da, db = getattr(a, "__dict__", None), getattr(b, "__dict__", None)
        if isinstance(da, dict) and isinstance(db, dict):
            self.tree(path, dict(da), dict(db))
            return
        if repr(a) != repr(b):
            self.diff(path, f"{short(a)} != {short(b)}")


def tensors_only(obj, which):
    sd = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    if not isinstance(sd, dict):
        print(f"note: {which} is a {qualname(type(sd))}, not a dict: no state dict to compare", file=sys.stderr)
        return {}
    out = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if len(out) != len(sd):
        print(f"note: {which}: skipped {len(sd) - len(out)} non-tensor state dict entries", file=sys.stderr)
    return out


def storage_id(t):
    st = t.untyped_storage()
    if st.nbytes() == 0 or t.device.type == "meta":
        return None  # empty storages have no identity worth comparing
    return (st.data_ptr(), st.nbytes())


def qualname(t):
    return f"{t.__module__}.{t.__qualname__}"


def render(k):
    if isinstance(k, type):
        return qualname(k)
    return k if isinstance(k, str) else repr(k)


def keyid(k):
    # Dict keys compare by type and value: True and 1 are different keys here.
    return (type(k), k)


def join(path, k):
    return f"{path}/{render(k)}" if path else render(k)


def short(x, n=80):
    r = qualname(x) if isinstance(x, type) else repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tree", action="store_true", help="compare the whole loaded objects, not just state dicts")
    ap.add_argument("--weights-only", action="store_true", help="torch.load(weights_only=True)")
    ap.add_argument("--mmap", action="store_true", help="torch.load(mmap=True)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends us quietly

    a = load(args.a, args.weights_only, args.mmap)
    b = load(args.b, args.weights_only, args.mmap)
    c = Cmp()
    if args.tree:
        c.tree("", a, b)
        c.sharing()
    else:
        c.state_dicts(a, b)
    if c.diffs:
        for line in c.diffs[:MAX_LINES]:
            print(line)
        if len(c.diffs) > MAX_LINES:
            print(f"... {len(c.diffs) - MAX_LINES} more differences")
        return 1
    print(f"equal: {c.tensors} tensors")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
