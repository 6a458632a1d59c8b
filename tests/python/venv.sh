#!/usr/bin/env bash
# Create (or reuse) the Python venv used by the ldmkit test suite and print its
# interpreter path as the last line of stdout, e.g.
#
#     "$(tests/python/venv.sh)" tests/fixtures/generate.py
#
# The venv lives OUTSIDE the repo (torch + CUDA wheels are ~3 GB) at
#     ${LDMKIT_VENV_ROOT:-$HOME/.cache/ldmkit}/venv-<sha256(requirements.txt)[:12]>
# so editing requirements.txt switches to a new venv instead of mutating one
# that other checkouts may share. A marker file is written only after pip
# succeeds; without it the install is (re)run, which also repairs a venv left
# half-installed by an interrupted run. All chatter goes to stderr so callers
# can rely on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
req="$here/requirements.txt"
python="${PYTHON:-python3}"

if command -v sha256sum >/dev/null 2>&1; then
    hash="$(sha256sum "$req" | cut -c1-12)"
else
    hash="$("$python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:12])' "$req")"
fi

root="${LDMKIT_VENV_ROOT:-${HOME:-/root}/.cache/ldmkit}"
venv="$root/venv-$hash"
marker="$venv/.ldmkit-requirements-installed"

install() {
    # A venv whose interpreter no longer runs (python upgraded/removed under
    # it, or creation interrupted before pip landed) is rebuilt from scratch.
    if ! "$venv/bin/python" -c 'import pip' >/dev/null 2>&1; then
        rm -rf "$venv"
        echo "venv.sh: creating $venv" >&2
        "$python" -m venv "$venv" >&2
    fi
    echo "venv.sh: installing $req (first run downloads ~3 GB; takes minutes)" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-input -r "$req" >&2
    # Copy of the requirements it was built from: makes the marker
    # self-describing when someone pokes around in the cache directory.
    cp "$req" "$marker.tmp"
    mv "$marker.tmp" "$marker"
}

if [ ! -f "$marker" ]; then
    mkdir -p "$root"
    # Two test runs starting at once must not pip-install into the same venv
    # concurrently; the second waits, then finds the marker and skips.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$root/.venv-$hash.lock"
        flock 9
    fi
    [ -f "$marker" ] || install
fi

echo "$venv/bin/python"
