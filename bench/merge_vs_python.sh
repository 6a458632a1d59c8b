#!/usr/bin/env bash
# `ldmkit merge` vs the seed's Python method (tests/python/seed.py merge:
# torch.load, dict pops, torch.save) vs plain `cp`, on a full-size SD 1.x
# Lightning training checkpoint (~14.6 GB) and a full-size release (~4.3 GB).
#
#     bench/merge_vs_python.sh [TRAINING [BASE]]
#
# TRAINING defaults to bench/out/sd1-training.ckpt (made by
# bench/gen_sd1_training_ckpt.py when absent, ~75 s, 14.6 GB of disk), BASE to
# bench/out/sd1-release.ckpt (made by bench/gen_sd1_release.py when absent,
# 4.3 GB). One round runs, in this order, each under
# /usr/bin/time -f '%e s %M KB' (wall seconds, peak RSS KiB):
#   ldmkit        LDMKIT merge TRAINING BASE -o OUT.ckpt
#   ldmkit f16    LDMKIT merge TRAINING BASE -o OUT.ckpt --dtype f16
#   python        PY tests/python/seed.py merge TRAINING BASE OUT.ckpt          (torch.load without mmap:
#   python f16    PY tests/python/seed.py merge TRAINING BASE OUT.ckpt --dtype f16      ~15 GB resident)
#   python mmap   ... seed.py merge --mmap, f32 and f16 (the fastest torch way; MMAP=0 skips them)
#   cp            cp (ldmkit's f32 output) COPY.ckpt: same output size, a floor
# followed each by an untimed `sync`, itself timed and reported as "+ sync s"
# (the tools return with their output still in dirty page cache). N rounds
# (default 3); medians reported. The page cache is NOT dropped: before every
# run `fincore` records how much of TRAINING, BASE and cp's source is cached,
# and the table reports it (inputs of 19 GB vs the machine's RAM, and the
# ~15 GB python runs evict them, so later runs may read partly cold). cp's
# source was written by the ldmkit run just before it, so it is usually warm.
# COLD=1 drops the page cache (sync; echo 3 > /proc/sys/vm/drop_caches) before
# every timed run instead, when the kernel allows it.
#
# After round 1 (untimed, CHECK=0 skips): tests/python/compare.py --mmap
# ldmkit's output vs python's, f32 and f16: they must be equal tensor for tensor.
#
# A markdown section (table: median wall s, + sync s, median peak RSS MiB,
# output size, wall ratio vs cp, wall and RSS ratio vs python) is printed and
# appended to bench/results/merge-sd1.md. Outputs go to a temporary folder in
# TRAINING's folder (same filesystem as the inputs; at most ~17 GB at once:
# ldmkit's and python's f32 + f16 outputs plus one more f32) and are deleted
# as soon as they are no longer needed.
#
# Environment: N (rounds, default 3), LDMKIT (binary, default
# target/release/ldmkit), PY (python with torch; default from
# tests/python/venv.sh), MMAP=0, CHECK=0, COLD=1 as above, RESULTS (file to
# append to, default bench/results/merge-sd1.md).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

training="${1:-bench/out/sd1-training.ckpt}"
base="${2:-bench/out/sd1-release.ckpt}"
n="${N:-3}"
bin="${LDMKIT:-target/release/ldmkit}"
py="${PY:-$(tests/python/venv.sh | tail -1)}"
results="${RESULTS:-bench/results/merge-sd1.md}"

if [ ! -f "$training" ]; then
    echo "generating $training (takes a few minutes)" >&2
    "$py" bench/gen_sd1_training_ckpt.py "$training"
fi
if [ ! -f "$base" ]; then
    echo "generating $base from $training" >&2
    "$py" bench/gen_sd1_release.py "$training" "$base"
fi
if [ ! -x "$bin" ]; then
    echo "error: $bin not found; build it with: cargo build --release" >&2
    exit 2
fi
if ! "$bin" merge --help >/dev/null 2>&1; then
    echo "error: $bin has no working 'merge' subcommand" >&2
    exit 2
fi

tmp="$(mktemp -d "$(dirname "$training")/merge-bench.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

need_kb=$(($(stat -c %s "$base") * 4 / 1024))
avail_kb="$(df -Pk "$tmp" | awk 'NR==2 {print $4}')"
if [ "$avail_kb" -lt "$need_kb" ]; then
    echo "error: $tmp has $((avail_kb / 1048576)) GiB free, needs about $((need_kb / 1048576)) GiB for the outputs" >&2
    exit 2
fi

# timed NAME CMD... -> appends "wall_s rss_kb sync_s cached" to $tmp/NAME.runs.
# GNU time when present; otherwise a resource-based wrapper (same format):
# wait4's ru_maxrss for the child is what GNU time's %M reports.
if [ -x /usr/bin/time ]; then
    timer=(/usr/bin/time -o "$tmp/time" -f '%e s %M KB')
else
    timer=(python3 -c 'import resource, subprocess, sys, time
out = sys.argv[1]
t = time.perf_counter()
rc = subprocess.call(sys.argv[2:])
wall = time.perf_counter() - t
with open(out, "w") as f:
    print(f"{wall:.2f} s {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} KB", file=f)
sys.exit(rc)' "$tmp/time")
fi

# Percentage of FILE's pages in the page cache (fincore), or "?".
cached() {
    if command -v fincore >/dev/null 2>&1 && [ -f "$1" ]; then
        fincore -bno RES "$1" | awk -v s="$(stat -c %s "$1")" '{printf "%.0f%%", (s > 0 ? 100 * $1 / s : 0)}'
    else
        echo "?"
    fi
}

cold=0
if [ "${COLD:-0}" != 0 ]; then
    if (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
        cold=1
    else
        echo "COLD=1: cannot write /proc/sys/vm/drop_caches here; running warm" >&2
    fi
fi

timed() {
    local name="$1" src="$2"
    shift 2
    sync
    [ "$cold" = 1 ] && echo 3 >/proc/sys/vm/drop_caches
    local state="train $(cached "$training"), base $(cached "$base")"
    [ -n "$src" ] && state="src $(cached "$src")"
    echo "  $name ($state)" >&2
    "${timer[@]}" "$@" >"$tmp/stdout" 2>"$tmp/stderr" || {
        echo "error: $name failed:" >&2
        cat "$tmp/stderr" >&2
        exit 1
    }
    local s0 s1
    s0="$(date +%s.%N)"
    sync
    s1="$(date +%s.%N)"
    printf '%s %s %s\n' "$(awk '{print $1, $3}' "$tmp/time" | tail -1)" \
        "$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.2f", b - a}')" "${state// /_}" >>"$tmp/$name.runs"
}

names=(ldmkit ldmkit_f16 python python_f16)
[ "${MMAP:-1}" != 0 ] && names+=(python_mmap python_mmap_f16)
names+=(cp)
for name in "${names[@]}"; do : >"$tmp/$name.runs"; done
out_size_f32=0
out_size_f16=0
check=""

for i in $(seq 1 "$n"); do
    echo "round $i/$n" >&2
    timed ldmkit "" "$bin" merge "$training" "$base" -o "$tmp/ldmkit.ckpt"
    timed ldmkit_f16 "" "$bin" merge "$training" "$base" -o "$tmp/ldmkit_f16.ckpt" --dtype f16
    timed python "" "$py" tests/python/seed.py merge "$training" "$base" "$tmp/python.ckpt"
    timed python_f16 "" "$py" tests/python/seed.py merge "$training" "$base" "$tmp/python_f16.ckpt" --dtype f16
    if [ "${MMAP:-1}" != 0 ]; then
        timed python_mmap "" "$py" tests/python/seed.py merge "$training" "$base" "$tmp/python_mmap.ckpt" --mmap
        rm -f "$tmp/python_mmap.ckpt"
        timed python_mmap_f16 "" "$py" tests/python/seed.py merge "$training" "$base" "$tmp/python_mmap_f16.ckpt" \
            --dtype f16 --mmap
        rm -f "$tmp/python_mmap_f16.ckpt"
    fi
    timed cp "$tmp/ldmkit.ckpt" cp "$tmp/ldmkit.ckpt" "$tmp/cp.ckpt"
    rm -f "$tmp/cp.ckpt"
    out_size_f32="$(stat -c %s "$tmp/ldmkit.ckpt")"
    out_size_f16="$(stat -c %s "$tmp/ldmkit_f16.ckpt")"
    if [ "$i" = 1 ] && [ "${CHECK:-1}" != 0 ]; then
        echo "  checking ldmkit == python (compare.py --mmap)" >&2
        for d in "" _f16; do
            r="$("$py" tests/python/compare.py --mmap "$tmp/ldmkit$d.ckpt" "$tmp/python$d.ckpt" 2>&1 | head -5 || true)"
            check+="ldmkit${d:-_f32} vs python${d:-_f32}: $(paste -sd';' <<<"$r" | sed 's/;/; /g'). "
        done
    fi
    rm -f "$tmp"/*.ckpt
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { cut -d' ' -f"$2" "$tmp/$1.runs" | median; }

rows=""
cpw="$(col cp 1)"
for name in "${names[@]}"; do
    w="$(col "$name" 1)"
    r="$(col "$name" 2)"
    s="$(col "$name" 3)"
    case "$name" in
    *f16) ref=python_f16 size="$out_size_f16" ;;
    *) ref=python size="$out_size_f32" ;;
    esac
    pw="$(col "$ref" 1)"
    pr="$(col "$ref" 2)"
    caches="$(cut -d' ' -f4 "$tmp/$name.runs" | tr '_' ' ' | paste -sd';' | sed 's/;/; /g')"
    rows+="$name|$w|$s|$r|$size|$cpw|$pw|$pr|$caches"$'\n'
done

label() {
    case "$1" in
    ldmkit) echo "\`ldmkit merge\`" ;;
    ldmkit_f16) echo "\`ldmkit merge --dtype f16\`" ;;
    python) echo "\`seed.py merge\` (torch.load)" ;;
    python_f16) echo "\`seed.py merge --dtype f16\`" ;;
    python_mmap) echo "\`seed.py merge --mmap\`" ;;
    python_mmap_f16) echo "\`seed.py merge --mmap --dtype f16\`" ;;
    cp) echo "\`cp\` of ldmkit's f32 output" ;;
    esac
}

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
fs="$(df -hT "$training" | awk 'NR==2 {print $2 " on " $1 " (" $3 " total, " $5 " free)"}')"
mem="$(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
torch_ver="$("$py" -c 'import torch; print(torch.__version__)')"
ldmkit_ver="$("$bin" --version 2>/dev/null || echo '?')"
loadavg="$(cut -d' ' -f1-3 /proc/loadavg)"
git_rev="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"
if [ "$cold" = 1 ]; then
    cache_note="Page cache dropped (\`sync; echo 3 > /proc/sys/vm/drop_caches\`) before every timed run."
else
    cache_note="Page cache not dropped; the last column is the share of each input (cp: of its source) in the page cache just before each run (\`fincore\`), one entry per round."
fi

section="$(
    printf '## %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf '`%s` (%s bytes) + `%s` (%s bytes) -> merged state_dict without EMA: f32 output %s bytes, f16 %s bytes.\n\n' \
        "$training" "$(stat -c %s "$training")" "$base" "$(stat -c %s "$base")" "$out_size_f32" "$out_size_f16"
    printf '| command | median wall s | + sync s | median peak RSS MiB | output bytes | wall / cp | wall / python | RSS / python | cached before run |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|---:|---|\n'
    while IFS='|' read -r name w s r size cpw pw pr caches; do
        [ -n "$name" ] || continue
        awk -v l="$(label "$name")" -v w="$w" -v s="$s" -v r="$r" -v size="$size" -v cpw="$cpw" -v pw="$pw" \
            -v pr="$pr" -v c="$caches" 'BEGIN {
            ratio = (cpw > 0 ? sprintf("%.2f", w / cpw) : "n/a")
            printf "| %s | %.2f | %.2f | %.0f | %s | %s | %.3f | %.3f | %s |\n", l, w, s, r / 1024, size,
                ratio, (pw > 0 ? w / pw : 0), (pr > 0 ? r / pr : 0), c
        }'
    done <<<"$rows"
    printf '\nMedian of %s round(s), runs in table order within a round (`/usr/bin/time -f '"'"'%%e s %%M KB'"'"'`; MiB = KiB/1024). "wall / python" and "RSS / python" compare with `seed.py merge` of the same dtype (torch.load without mmap). "+ sync s": the untimed `sync` right after the run (writeback of its output). %s\n\n' "$n" "$cache_note"
    [ -z "$check" ] || printf 'Equality (round 1, `tests/python/compare.py --mmap`): %s\n\n' "$check"
    printf 'Machine: %s CPU(s), %s; %s; filesystem %s; load average at the end %s (other jobs on the machine skew timings). %s, torch %s, git %s.\n' \
        "$(nproc)" "$cpu" "$mem" "$fs" "$loadavg" "$ldmkit_ver" "$torch_ver" "$git_rev"
    printf '\nCommands:\n\n```sh\n'
    printf '%s merge %s %s -o OUT.ckpt [--dtype f16]\n' "$bin" "$training" "$base"
    printf '%s tests/python/seed.py merge %s %s OUT.ckpt [--dtype f16] [--mmap]\n' "${py/#$HOME/\~}" "$training" "$base"
    printf 'cp OUT.ckpt COPY.ckpt\n```\n\n'
    printf 'Raw runs (wall s, peak RSS KiB, sync s):'
    for name in "${names[@]}"; do
        printf ' %s %s;' "$name" "$(cut -d' ' -f1-3 "$tmp/$name.runs" | paste -sd',' | sed 's/,/, /g')"
    done
    printf '\n'
)"

mkdir -p "$(dirname "$results")"
[ -s "$results" ] || printf '# ldmkit merge vs the seed'"'"'s Python method vs cp: SD 1.x training + release\n\nProduced by `bench/merge_vs_python.sh`; see bench/README.md.\n\n' >"$results"
printf '%s\n\n' "$section" >>"$results"
printf '%s\n' "$section"
echo "appended to $results" >&2
