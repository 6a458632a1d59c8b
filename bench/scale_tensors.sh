#!/usr/bin/env bash
# Scale in the tensor count: `ldmkit strip` to .ckpt and `ldmkit diff` on checkpoints of
# many tiny tensors (issue 18 §4: both were quadratic in the count), with torch.load /
# torch.save of the same checkpoints for comparison.
#
#     bench/scale_tensors.sh
#
# For each size in SIZES (default "10000 40000 100000"), bench/gen_tiny_tensors.py writes
# two safetensors files of that many one-element f32 tensors (UNet-style keys, one block per
# tensor; the second file's values shifted by 1) into bench/out/scale/. Timed, each under
# /usr/bin/time (wall s, peak RSS), N runs each (default 3), medians reported:
#   strip st->ckpt   LDMKIT strip A.safetensors -o A.ckpt
#   strip ckpt->ckpt LDMKIT strip A.ckpt -o OUT.ckpt
#   diff st          LDMKIT diff A.safetensors B.safetensors   (stdout to /dev/null)
#   diff ckpt        LDMKIT diff A.ckpt B.ckpt
# then once (TORCH=0 skips): bench/torch_tiny_tensors.py A.ckpt, which times torch.load and
# torch.save in-process (`import torch` excluded) and checks every value of ldmkit's file.
# With BASELINE=path/to/older/ldmkit, the same four commands run with it too, for sizes up
# to BASELINE_MAX (default 20000: the quadratic version takes minutes beyond).
#
# A markdown section (machine: nproc, CPU model, load average, since other work on the
# machine shows in wall times) is printed and appended to bench/results/scale-tensors.md.
#
# Environment: SIZES, N, LDMKIT (default target/release/ldmkit), BASELINE, BASELINE_MAX,
# LABEL / BASELINE_LABEL (how the table names the two binaries; default their paths), PY
# (python with torch; default from tests/python/venv.sh), TORCH=0, RESULTS.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

sizes="${SIZES:-10000 40000 100000}"
n="${N:-3}"
bin="${LDMKIT:-target/release/ldmkit}"
baseline="${BASELINE:-}"
baseline_max="${BASELINE_MAX:-20000}"
label="${LABEL:-\`$bin\`}"
baseline_label="${BASELINE_LABEL:-baseline \`$baseline\`}"
results="${RESULTS:-bench/results/scale-tensors.md}"
torch="${TORCH:-1}"
if [ "$torch" != 0 ]; then
    py="${PY:-$(tests/python/venv.sh | tail -1)}"
fi
if [ ! -x "$bin" ]; then
    echo "error: $bin not found; build it with: cargo build --release -p ldmkit --bin ldmkit" >&2
    exit 2
fi
if [ ! -x /usr/bin/time ]; then
    echo "error: /usr/bin/time is missing (apt-get install time)" >&2
    exit 2
fi

out=bench/out/scale
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# timed NAME CMD...: N runs of CMD, each's "wall_s rss_kb" appended to $tmp/NAME.
timed() {
    local name="$1"
    shift
    for _ in $(seq "$n"); do
        /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" >/dev/null 2>"$tmp/stderr" || {
            echo "error: $* failed:" >&2
            cat "$tmp/stderr" >&2
            exit 1
        }
        tail -1 "$tmp/time" >>"$tmp/$name"
    done
}
wall() { cut -d' ' -f1 "$tmp/$1" | median; }
rss() { echo $(($(cut -d' ' -f2 "$tmp/$1" | median | cut -d. -f1) / 1024)); }

# Both tools' commands on size $1 with binary $2; results under tag $3.
ldmkit_runs() {
    local size="$1" tool="$2" tag="$3" a="$out/tiny-$1-a" b="$out/tiny-$1-b"
    echo "  $tag: strip, diff ($size tensors)" >&2
    timed "$tag-st-ckpt" "$tool" strip "$a.safetensors" -o "$tmp/$tag-a.ckpt"
    "$tool" strip "$b.safetensors" -o "$tmp/$tag-b.ckpt" >/dev/null 2>&1
    timed "$tag-ckpt-ckpt" "$tool" strip "$tmp/$tag-a.ckpt" -o "$tmp/$tag-out.ckpt"
    timed "$tag-diff-st" "$tool" diff "$a.safetensors" "$b.safetensors"
    timed "$tag-diff-ckpt" "$tool" diff "$tmp/$tag-a.ckpt" "$tmp/$tag-b.ckpt"
}

load_avg="$(cut -d' ' -f1-3 /proc/loadavg)"
for size in $sizes; do
    for side in a b; do
        f="$out/tiny-$size-$side.safetensors"
        [ -f "$f" ] || python3 bench/gen_tiny_tensors.py "$size" "$f" "$([ $side = a ] && echo 0 || echo 1)"
    done
    ldmkit_runs "$size" "$bin" "new-$size"
    if [ -n "$baseline" ] && [ "$size" -le "$baseline_max" ]; then
        ldmkit_runs "$size" "$baseline" "old-$size"
    fi
    if [ "$torch" != 0 ]; then
        echo "  torch.load / torch.save ($size tensors)" >&2
        "$py" bench/torch_tiny_tensors.py "$tmp/new-$size-a.ckpt" "$tmp/torch-$size.ckpt" >"$tmp/torch-$size.json"
        rm -f "$tmp/torch-$size.ckpt"
    fi
    rm -f "$tmp"/*-"$size"-*.ckpt
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

json() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$@"; }

{
    echo
    echo "## $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine: $(nproc) cores, $(lscpu | grep 'Model name' | sed 's/Model name: *//'), load average $load_avg at the start, $load_after at the end. \`$bin\` at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git status --porcelain 2>/dev/null)" ] && echo ' (with uncommitted changes)')."
    echo "Median wall seconds of $n runs (peak RSS MiB of \`strip\` in brackets); torch columns: one in-process run, \`import torch\` excluded."
    echo
    echo "| tensors | ldmkit | strip .safetensors → .ckpt | strip .ckpt → .ckpt | diff .safetensors | diff .ckpt | torch.load | torch.save |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|"
    for size in $sizes; do
        for tag in new old; do
            [ -f "$tmp/$tag-$size-st-ckpt" ] || continue
            t="$tmp/torch-$size.json"
            tl="" ts=""
            if [ "$tag" = new ] && [ -f "$t" ]; then
                [ "$(json "$t" values_ok)" = True ] || echo "warning: torch read wrong values from ldmkit's $size-tensor file" >&2
                tl="$(json "$t" load_s)" ts="$(json "$t" save_s)"
            fi
            name="$([ $tag = new ] && echo "$label" || echo "$baseline_label")"
            echo "| $size | $name | $(wall "$tag-$size-st-ckpt") ($(rss "$tag-$size-st-ckpt")) | $(wall "$tag-$size-ckpt-ckpt") ($(rss "$tag-$size-ckpt-ckpt")) | $(wall "$tag-$size-diff-st") | $(wall "$tag-$size-diff-ckpt") | $tl | $ts |"
        done
    done
} | tee -a "$results"
