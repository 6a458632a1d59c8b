#!/usr/bin/env python3
"""What real torch does with every file of a corpus manifest, in a sandbox.

    $(tests/python/venv.sh) tests/python/torch_reads.py MANIFEST_DIR OUT.json

For each file listed in MANIFEST_DIR/MANIFEST.json (tests/fixtures/hostile),
two forked children of one process that imported torch once:

  1. torch.load(path, weights_only=False, map_location="cpu",
                pickle_module=SPY)
     SPY is a module-like copy of `pickle` whose Unpickler records (through a
     pipe) every find_class call and every load() that returns. torch builds
     its own unpickler classes on top of pickle_module.Unpickler and reads
     the legacy format's stacked pickles with pickle_module.load, so every
     unpickling torch does is seen.
  2. torch.load(path, weights_only=True, map_location="cpu")

Each child runs under a 20 s alarm with cwd and HOME set to a fresh temp dir
and, where the kernel allows (root, or unprivileged user namespaces), in a
private mount namespace whose /tmp is a fresh directory too: payloads
(`touch /tmp/ldmkit-pwned-<stem>`) then land there, never in the real /tmp,
so a concurrently running test that asserts "no marker exists" cannot see
them. Otherwise the real /tmp is used and any marker the child created is
removed again (TORCH_READS_SHARED_TMP=1 forces this mode). Either way the
marker's appearance is the "canary". Each child may also map at most 2 GiB
more address space than the parent: decompression bombs fail fast.

OUT.json: a list, in manifest order, of
  {"file", "unpickles", "loads", "loads_weights_only", "error", "canary",
   "error_weights_only", "find_class", "load_returned"}
  unpickles:  find_class was called, or an unpickler's load() returned, or
              the canary appeared: torch really unpickled (part of) the file.
  loads:      torch.load(weights_only=False) returned.
  loads_weights_only: torch.load(weights_only=True) returned.
  error / error_weights_only: "ExceptionType: first line" of the failure
              (or "timeout" / "killed by signal N"), None when it loaded.
  canary:     the payload's marker file appeared (in either child).
A summary table goes to stdout.

The Rust tests use it to check that ldmkit never calls a file "not a
checkpoint" when torch would unpickle it.
"""

import ctypes
import importlib
import io
import json
import os
import pickle
import resource
import selectors
import shutil
import signal
import sys
import tempfile
import time
import types

MARKER_PREFIX = "ldmkit-pwned-"
ALARM_S = 20
JOBS = max(2, min(8, os.cpu_count() or 1))

# Each child may map this much more address space than the parent had: far
# more than any legitimate corpus file needs, less than a decompression bomb
# asks for (zip_deflate_bomb.ckpt inflates to > 2 GiB).
HEADROOM = 2 << 30
# Imported once in the parent, only to save each child seconds of import
# time: torch/numpy modules that corpus payloads name. (Nothing a file names
# is ever imported here; unpickling in the children imports what it imports.)
WARM = ("torch._inductor.codecache", "torch._inductor.cpp_builder", "torch.utils.cpp_extension",
        "torch.utils.collect_env", "numpy.testing")  # fmt: skip

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18


def make_spy(fd):
    """A stand-in for the pickle module that reports to fd: b"F" per
    find_class call, b"L" per load() that returns."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            os.write(fd, b"F")
            return super().find_class(module, name)

        def load(self):
            result = super().load()
            os.write(fd, b"L")
            return result

    spy = types.ModuleType("ldmkit_spy_pickle")
    for k in dir(pickle):
        if not k.startswith("__"):
            setattr(spy, k, getattr(pickle, k))
    spy.Unpickler = Unpickler
    spy.load = lambda file, **kw: Unpickler(file, **kw).load()
    spy.loads = lambda data, **kw: Unpickler(io.BytesIO(data), **kw).load()
    return spy


def private_tmp(tmp):
    """Make `tmp` this process's /tmp (new mount namespace). True on success."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.getuid(), os.getgid()
    for flags in ((CLONE_NEWNS,) if os.geteuid() == 0 else ()) + (CLONE_NEWNS | CLONE_NEWUSER,):
        if libc.unshare(flags) != 0:
            continue
        try:
            if flags & CLONE_NEWUSER:
                for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
                    with open(f"/proc/self/{name}", "w") as f:
                        f.write(text)
        except OSError:
            return False
        if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            return False
        return libc.mount(tmp.encode(), b"/tmp", None, MS_BIND, None) == 0
    return False


def vm_size():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return None


def child(torch, path, weights_only, fd, box):
    """Runs in the forked child; never returns."""
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        # The file is opened before /tmp is replaced (the corpus, like the
        # box itself, may live there) and read through /proc/self/fd, still
        # as a path. HOME is a fresh directory inside the (new) /tmp.
        src = os.open(path, os.O_RDONLY)
        target = f"/proc/self/fd/{src}"
        private = not os.environ.get("TORCH_READS_SHARED_TMP") and private_tmp(os.path.join(box, "tmp"))
        os.write(fd, b"P" if private else b"S")
        home = "/tmp/home" if private else os.path.join(box, "tmp", "home")
        os.environ["HOME"] = home
        os.environ["TMPDIR"] = "/tmp"
        os.chdir(home)
        torch.set_num_threads(1)
        vm, (_soft, hard) = vm_size(), resource.getrlimit(resource.RLIMIT_AS)
        if vm:
            cap = vm + HEADROOM if hard == resource.RLIM_INFINITY else min(vm + HEADROOM, hard)
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
        signal.alarm(ALARM_S)  # default action: the child dies
        if weights_only:
            torch.load(target, weights_only=True, map_location="cpu")
        else:
            torch.load(target, weights_only=False, map_location="cpu", pickle_module=make_spy(fd))
        os.write(fd, b"R")
    except BaseException as e:  # noqa: BLE001 - everything is a result here
        text = str(e).strip().splitlines()
        msg = f"{type(e).__name__}: {text[0] if text else ''}".strip()
        try:
            os.write(fd, b"E" + msg[:300].encode("utf-8", "replace"))
        except OSError:
            pass
    os._exit(0)


class Job:
    def __init__(self, index, path, weights_only, root):
        self.index, self.path, self.weights_only = index, path, weights_only
        self.box = tempfile.mkdtemp(prefix="box-", dir=root)
        os.makedirs(os.path.join(self.box, "tmp", "home"))
        self.buf = b""
        self.started = None
        self.pid = None
        self.status = None


def start(torch, job):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child(torch, job.path, job.weights_only, w, job.box)
    os.close(w)
    job.pid, job.fd, job.started = pid, r, time.monotonic()


def parse(job):
    """(private_tmp, find_class, load_returned, loaded, error) of a finished job."""
    buf = job.buf
    private = buf[:1] == b"P"
    if buf[:1] in (b"P", b"S"):
        buf = buf[1:]
    cut = min([i for i in (buf.find(b"R"), buf.find(b"E")) if i >= 0], default=len(buf))
    tags, tail = buf[:cut], buf[cut:]
    if tail[:1] == b"R":
        error = None
    elif tail[:1] == b"E":
        error = tail[1:].decode("utf-8", "replace")
    elif job.status is not None and os.WIFSIGNALED(job.status):
        sig = os.WTERMSIG(job.status)
        error = "timeout" if sig == signal.SIGALRM else f"killed by signal {sig}"
    else:
        error = "child exited without a result"
    return private, b"F" in tags, b"L" in tags, tail[:1] == b"R", error


def markers_in(directory):
    try:
        return {n for n in os.listdir(directory) if n.startswith(MARKER_PREFIX)}
    except OSError:
        return set()


def run_all(torch, manifest, manifest_dir, root):
    """Both children for every file; {manifest index: partial result}, jobs."""
    stems = {os.path.splitext(e["file"])[0] for e in manifest}
    # Markers left in the real /tmp by someone else are not ours to judge.
    before = markers_in("/tmp")
    pending = []
    for i, e in enumerate(manifest):
        path = os.path.abspath(os.path.join(manifest_dir, e["file"]))
        pending += [Job(i, path, False, root), Job(i, path, True, root)]
    done = []
    running = {}
    sel = selectors.DefaultSelector()
    while pending or running:
        while pending and len(running) < JOBS:
            job = pending.pop(0)
            start(torch, job)
            running[job.fd] = job
            sel.register(job.fd, selectors.EVENT_READ, job)
        for key, _ in sel.select(timeout=1.0):
            job = key.data
            chunk = os.read(job.fd, 65536)
            if chunk:
                job.buf += chunk
                continue
            sel.unregister(job.fd)
            os.close(job.fd)
            del running[job.fd]
            _, job.status = os.waitpid(job.pid, 0)
            job.seconds = time.monotonic() - job.started
            done.append(job)
        # A child stuck where SIGALRM cannot reach it.
        for job in list(running.values()):
            if time.monotonic() - job.started > ALARM_S + 10:
                os.kill(job.pid, signal.SIGKILL)

    # Popen-style payloads touch the marker from a grandchild that may
    # outlive the loader; give them a moment before looking.
    time.sleep(1.0)
    by_file = {}
    for job in done:
        private, fc, lr, loaded, error = parse(job)
        stem = os.path.splitext(os.path.basename(manifest[job.index]["file"]))[0]
        marker = MARKER_PREFIX + stem
        canary = marker in markers_in(os.path.join(job.box, "tmp"))
        if not private and os.path.exists(os.path.join("/tmp", marker)) and marker not in before:
            canary = True
        r = by_file.setdefault(job.index, {"file": manifest[job.index]["file"], "canary": False})
        r["canary"] = r["canary"] or canary
        r["sandbox"] = "private /tmp" if private else "shared /tmp"
        if job.weights_only:
            r["loads_weights_only"], r["error_weights_only"] = loaded, error
        else:
            r["loads"], r["error"], r["find_class"], r["load_returned"] = loaded, error, fc, lr
    # Markers our children left in the real /tmp (where no private /tmp
    # could be had). With a private /tmp the real one is never touched.
    if any(r["sandbox"] == "shared /tmp" for r in by_file.values()):
        for name in markers_in("/tmp") - before:
            if name[len(MARKER_PREFIX) :] in stems:
                try:
                    os.remove(os.path.join("/tmp", name))
                except FileNotFoundError:
                    pass
    return by_file, done


def main(argv):
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    manifest_dir, out_path = argv
    with open(os.path.join(manifest_dir, "MANIFEST.json")) as f:
        manifest = json.load(f)
    import torch  # once; every child inherits it

    for name in WARM:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - only a speed-up
            pass

    t0 = time.monotonic()
    root = tempfile.mkdtemp(prefix="torch_reads-")
    try:
        by_file, done = run_all(torch, manifest, manifest_dir, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if os.environ.get("TORCH_READS_TIMES"):
        for job in sorted(done, key=lambda j: -j.seconds)[:15]:
            print(f"{job.seconds:6.2f} s  {'wo' if job.weights_only else 'full'}  {job.path}", file=sys.stderr)

    results = []
    for i in range(len(manifest)):
        r = by_file[i]
        r["unpickles"] = r["find_class"] or r["load_returned"] or r["canary"]
        keys = ("file", "unpickles", "loads", "loads_weights_only", "error", "canary", "error_weights_only",
                "find_class", "load_returned", "sandbox")  # fmt: skip
        results.append({k: r[k] for k in keys})
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")

    # Summary: counts per container.
    containers = sorted({e["container"] for e in manifest})
    cols = ("files", "unpickles", "loads", "loads_weights_only", "canary")
    print(f"{'container':<14}" + "".join(f"{c:>20}" for c in cols))
    for cont in containers + ["total"]:
        rows = [r for r, e in zip(results, manifest) if cont in ("total", e["container"])]
        counts = [len(rows)] + [sum(bool(r[c]) for r in rows) for c in cols[1:]]
        print(f"{cont:<14}" + "".join(f"{n:>20}" for n in counts))
    sandboxes = sorted({r["sandbox"] for r in results})
    print(f"{len(results)} files in {time.monotonic() - t0:.1f} s; sandbox: {', '.join(sandboxes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
