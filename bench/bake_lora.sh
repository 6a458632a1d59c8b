#!/usr/bin/env bash
# `ldmkit bake-lora` vs the Python way (diffusers load_lora_weights + fuse_lora
# + save) vs plain `cp`, on full-size checkpoints:
#
#     bench/bake_lora.sh
#     N=1 PYN=1 JOBS="sd1 sdxl" SD1=... SDXL=... bench/bake_lora.sh
#
# Jobs (JOBS, default "sd1 sdxl"):
#   sd1   one rank-RANK (32) kohya LoRA into SD1 (default bench/out/sd1-release.safetensors,
#         SD 1.5 fp16, 2.13 GB, made by `gen_sdxl_fp16.py --arch sd15` when absent)
#   sdxl  three rank-RANK kohya LoRAs into SDXL (default bench/out/sdxl-base-fp16.safetensors,
#         SDXL base 1.0 fp16, 6.94 GB, made by gen_sdxl_fp16.py when absent)
# The LoRAs (SD1_LORAS / SDXL_LORAS: space-separated paths) default to
# LORA_DIR/<model stem>.lora-r<RANK>-s<seed>.safetensors (LORA_DIR default
# bench/out), made by bench/gen_lora.py (every module kohya's networks/lora.py
# trains: UNet transformers + text encoders; seeds 1, 2, 3) when absent.
# CONFIG (diffusers configs for the Python side) is derived once, untimed, by
# bench/derive_config.py (SD1_CONFIG / SDXL_CONFIG override).
#
# Per job and round, in this order, each under /usr/bin/time -f '%e s %M KB'
# (wall seconds, peak RSS KiB), each followed by an untimed `sync` that is
# itself timed ("+ sync s", writeback of the output the run left dirty):
#   ldmkit   LDMKIT bake-lora MODEL L1 [L2 L3] -o OUT.safetensors
#   cp       cp OUT.safetensors COPY.safetensors    (same bytes written: the floor)
#   python   PY tests/python/bake_ref.py MODEL CONFIG OUT L1 [L2 L3]   (the reference:
#            diffusers load_lora_weights + fuse_lora per LoRA, plus its checks;
#            rounds 1..PYN only, default PYN=1)
#   lean     PY bench/bake_diffusers.py MODEL CONFIG OUT L1 [L2 L3]    (the same diffusers
#            calls without bake_ref's checks and copies; rounds 1..PYN; LEAN=0 skips)
# N rounds (default 3), medians. The page cache is not dropped: before each
# run but cp, MODEL and the LoRAs are read once, untimed (WARM=0 skips), and
# the table records how much of MODEL `fincore` found cached just before.
# Python runs are watched: when MemAvailable drops below MEMGUARD_MB (default
# 1536) the run's process is killed (by its pid) and recorded as "not
# measured: out of memory"; so is a run the kernel kills with signal 9.
#
# Check (round 1, untimed; CHECK=0 skips): tests/python/compare_close.py
# ldmkit's output vs bake_ref's (and bake_diffusers' vs ldmkit's); fp16 must
# be equal bit for bit.
#
# A markdown section per run (per job: table, targets, raw runs; machine,
# commands) is printed and appended to bench/results/bake-lora.md (RESULTS=).
# Outputs go to a temporary folder in bench/out (OUTDIR=), at most three
# outputs at once, deleted when done.
#
# Environment: N, PYN, JOBS, RANK, SD1, SDXL, SD1_LORAS, SDXL_LORAS, LORA_DIR,
# SD1_CONFIG, SDXL_CONFIG, LDMKIT (default target/release/ldmkit), PY (default
# from tests/python/venv.sh), LEAN, CHECK, WARM, MEMGUARD_MB, RESULTS, OUTDIR.
# PYN=0 times ldmkit and cp only.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

n="${N:-3}"
pyn="${PYN:-1}"
jobs="${JOBS:-sd1 sdxl}"
rank="${RANK:-32}"
bin="${LDMKIT:-target/release/ldmkit}"
py="${PY:-$(tests/python/venv.sh | tail -1)}"
results="${RESULTS:-bench/results/bake-lora.md}"
lora_dir="${LORA_DIR:-bench/out}"
lean="${LEAN:-1}"
memguard_kb=$((${MEMGUARD_MB:-1536} * 1024))
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ ! -x "$bin" ] || ! "$bin" bake-lora --help >/dev/null 2>&1; then
    echo "error: $bin has no working 'bake-lora' subcommand; build it with: cargo build --release" >&2
    exit 2
fi
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time (GNU time) is missing: apt-get install time" >&2; exit 2; }

stem() { basename "${1%.*}"; }

# model JOB -> path (generated when it is the default and missing)
model_of() {
    case "$1" in
    sd1) local m="${SD1:-bench/out/sd1-release.safetensors}" arch=sd15 ;;
    sdxl) local m="${SDXL:-bench/out/sdxl-base-fp16.safetensors}" arch=sdxl ;;
    *) echo "error: unknown job $1 (sd1, sdxl)" >&2; exit 2 ;;
    esac
    if [ ! -f "$m" ]; then
        local var
        var="$(tr a-z A-Z <<<"$1")"
        if [ -n "${!var:-}" ]; then
            echo "error: $m not found" >&2
            exit 2
        fi
        echo "generating $m (gen_sdxl_fp16.py --arch $arch)" >&2
        "$py" bench/gen_sdxl_fp16.py --arch "$arch" "$m" >&2
    fi
    echo "$m"
}

# loras JOB MODEL -> paths (generated when default and missing)
loras_of() {
    local list count
    case "$1" in
    sd1) list="${SD1_LORAS:-}" count=1 ;;
    sdxl) list="${SDXL_LORAS:-}" count=3 ;;
    esac
    if [ -n "$list" ]; then
        for l in $list; do [ -f "$l" ] || { echo "error: $l not found" >&2; exit 2; }; done
        echo "$list"
        return
    fi
    local out=()
    for s in $(seq 1 "$count"); do
        local l
        l="$lora_dir/$(stem "$2").lora-r$rank-s$s.safetensors"
        if [ ! -f "$l" ]; then
            "$py" bench/gen_lora.py "$2" "$l" --rank "$rank" --seed "$s" >&2
        fi
        out+=("$l")
    done
    echo "${out[*]}"
}

mkdir -p bench/out
tmp="$(mktemp -d "${OUTDIR:-bench/out}/bake-bench.XXXXXX")"
guard_pid=""
trap 'rm -rf "$tmp"' EXIT

# Percentage of FILE's pages in the page cache (fincore), or "?".
cached() {
    if command -v fincore >/dev/null 2>&1 && [ -f "$1" ]; then
        fincore -bno RES "$1" | awk -v s="$(stat -c %s "$1")" '{printf "%.0f%%", (s > 0 ? 100 * $1 / s : 0)}'
    else
        echo "?"
    fi
}

mem_available_kb() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }

# timed JOB NAME SRC GUARD CMD... -> appends "wall_s rss_kb sync_s cached" to
# $tmp/JOB.NAME.runs; for GUARD=1 a failure is recorded in $tmp/JOB.NAME.fail
# instead of aborting.
timed() {
    local job="$1" name="$2" src="$3" guard="$4"
    shift 4
    sync
    # WARM=1 (default): read MODEL and the LoRAs once, untimed, so every tool
    # starts from the same warm page cache (cp's source was just written).
    [ -z "$src" ] && [ "${WARM:-1}" != 0 ] && cat "$model" "${loras[@]}" >/dev/null
    local state
    state="$(cached "${src:-$model}")"
    echo "  $job $name (${src:+src }cached $state)" >&2
    /usr/bin/time -o "$tmp/time" -f '%e s %M KB' "$@" >"$tmp/stdout" 2>"$tmp/stderr" &
    local pid=$! oom="" rc=0
    if [ "$guard" = 1 ]; then
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$(mem_available_kb)" -lt "$memguard_kb" ]; then
                # The command is /usr/bin/time's child: kill that one process by its id.
                local child
                child="$(pgrep -P "$pid" | head -1 || true)"
                if [ -n "$child" ] && kill -9 "$child" 2>/dev/null; then
                    oom="MemAvailable fell below $((memguard_kb / 1024)) MiB"
                    break
                fi
            fi
            sleep 0.2
        done
    fi
    wait "$pid" || rc=$?
    if [ "$rc" != 0 ]; then
        local why
        if [ -n "$oom" ]; then
            why="not measured: out of memory ($oom after $(tail -1 "$tmp/time" | awk '{print $1}') s at $(tail -1 "$tmp/time" | awk '{printf "%.0f", $3 / 1024}') MiB RSS; killed)"
        elif grep -q 'signal 9' "$tmp/time" 2>/dev/null; then
            why="not measured: killed by signal 9 (out of memory?) after $(tail -1 "$tmp/time" | awk '{print $1}') s at $(tail -1 "$tmp/time" | awk '{printf "%.0f", $3 / 1024}') MiB RSS"
        else
            why="failed (exit $rc): $(grep -v '^\s*$' "$tmp/stderr" | tail -1 | cut -c1-300)"
        fi
        echo "  $job $name: $why" >&2
        if [ "$guard" = 1 ]; then
            echo "$why" >"$tmp/$job.$name.fail"
            return 1
        fi
        cat "$tmp/stderr" >&2
        exit 1
    fi
    local s0 s1
    s0="$(date +%s.%N)"
    sync
    s1="$(date +%s.%N)"
    printf '%s %s %s\n' "$(tail -1 "$tmp/time" | awk '{print $1, $3}')" \
        "$(awk -v a="$s0" -v b="$s1" 'BEGIN {printf "%.2f", b - a}')" "$state" >>"$tmp/$job.$name.runs"
}

# check JOB A B LABEL: compare_close, appended to $tmp/JOB.check
check() {
    [ "${CHECK:-1}" != 0 ] || return 0
    [ -f "$2" ] && [ -f "$3" ] || return 0
    echo "  checking $4 (compare_close.py)" >&2
    local r
    r="$("$py" tests/python/compare_close.py "$2" "$3" 2>&1 | tail -3 || true)"
    printf '%s: %s. ' "$4" "$(paste -sd';' <<<"$r" | sed 's/;/; /g')" >>"$tmp/$1.check"
}

# Header info of a safetensors file: tensors, LoRA modules.
st_info() {
    "$py" -c 'import json, struct, sys
f = open(sys.argv[1], "rb"); h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0])); h.pop("__metadata__", None)
mods = sum(k.endswith(".lora_down.weight") for k in h)
print(f"{len(h)} tensors" + (f", {mods} modules" if mods else ""))' "$1"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print ""; else print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
col() { [ -s "$tmp/$1.runs" ] && cut -d' ' -f"$2" "$tmp/$1.runs" | median || echo ""; }

label() {
    case "$1" in
    ldmkit) echo "\`ldmkit bake-lora\`" ;;
    cp) echo "\`cp\` of ldmkit's output" ;;
    python) echo "\`bake_ref.py\` (diffusers fuse_lora + checks)" ;;
    lean) echo "\`bake_diffusers.py\` (diffusers fuse_lora, lean)" ;;
    esac
}

sections=""
cmds=""
for job in $jobs; do
    model="$(model_of "$job")"
    read -r -a loras <<<"$(loras_of "$job" "$model")"
    cfgvar="$(tr a-z A-Z <<<"$job")_CONFIG"
    config="${!cfgvar:-}"
    if [ -z "$config" ]; then
        config="$tmp/$job.config.json"
        "$py" bench/derive_config.py "$model" "$config" >&2
    fi
    need_kb=$(($(stat -c %s "$model") * 3 / 1024 + 1048576))
    avail_kb="$(df -Pk "$tmp" | awk 'NR==2 {print $4}')"
    if [ "$avail_kb" -lt "$need_kb" ]; then
        echo "error: $tmp has $((avail_kb / 1048576)) GiB free, needs about $((need_kb / 1048576)) GiB for the outputs" >&2
        exit 2
    fi
    names=(ldmkit cp python)
    [ "$lean" != 0 ] && names+=(lean)
    for name in "${names[@]}"; do : >"$tmp/$job.$name.runs"; done
    : >"$tmp/$job.check"
    out_size=0
    echo "job $job: $model + ${loras[*]}" >&2
    for i in $(seq 1 "$n"); do
        echo "round $i/$n" >&2
        timed "$job" ldmkit "" 0 "$bin" bake-lora "$model" "${loras[@]}" -o "$tmp/ldmkit.safetensors"
        out_size="$(stat -c %s "$tmp/ldmkit.safetensors")"
        timed "$job" cp "$tmp/ldmkit.safetensors" 0 cp "$tmp/ldmkit.safetensors" "$tmp/cp.safetensors"
        rm -f "$tmp/cp.safetensors"
        if [ "$i" -le "$pyn" ]; then
            if timed "$job" python "" 1 "$py" tests/python/bake_ref.py "$model" "$config" "$tmp/python.safetensors" "${loras[@]}"; then
                [ "$i" = 1 ] && check "$job" "$tmp/ldmkit.safetensors" "$tmp/python.safetensors" "ldmkit vs bake_ref"
            fi
            rm -f "$tmp/python.safetensors"
            if [ "$lean" != 0 ]; then
                if timed "$job" lean "" 1 "$py" bench/bake_diffusers.py "$model" "$config" "$tmp/lean.safetensors" "${loras[@]}"; then
                    [ "$i" = 1 ] && check "$job" "$tmp/lean.safetensors" "$tmp/ldmkit.safetensors" "bake_diffusers vs ldmkit"
                fi
                rm -f "$tmp/lean.safetensors"
            fi
        fi
        rm -f "$tmp"/*.safetensors
    done

    lw="$(col "$job.ldmkit" 1)"
    lr="$(col "$job.ldmkit" 2)"
    cw="$(col "$job.cp" 1)"
    table=""
    for name in "${names[@]}"; do
        if [ -s "$tmp/$job.$name.runs" ]; then
            w="$(col "$job.$name" 1)" r="$(col "$job.$name" 2)" s="$(col "$job.$name" 3)"
            c="$(cut -d' ' -f4 "$tmp/$job.$name.runs" | paste -sd';' | sed 's/;/; /g')"
            table+="$(awk -v l="$(label "$name")" -v w="$w" -v s="$s" -v r="$r" -v size="$out_size" -v cw="$cw" -v lw="$lw" \
                -v lr="$lr" -v c="$c" -v k="$(wc -l <"$tmp/$job.$name.runs")" 'BEGIN {
                printf "| %s | %.2f | %.2f | %.0f | %s | %s | %s | %s | %s | %s |\n", l, w, s, r / 1024, size,
                    (cw > 0 ? sprintf("%.2f", w / cw) : "n/a"), (lw > 0 ? sprintf("%.2f", w / lw) : "n/a"),
                    (lr > 0 ? sprintf("%.3f", r / lr) : "n/a"), k, c
            }')"$'\n'
        else
            why="$(cat "$tmp/$job.$name.fail" 2>/dev/null || echo "not run (PYN=$pyn)")"
            table+="| $(label "$name") | $why | | | | | | | 0 | |"$'\n'
        fi
    done
    targets="$(awk -v lw="$lw" -v cw="$cw" -v lr="$lr" -v pw="$(col "$job.python" 1)" -v ew="$(col "$job.lean" 1)" 'BEGIN {
        if (cw > 0) printf "ldmkit / cp wall %.2f (target <= 1.5: %s); ", lw / cw, (lw / cw <= 1.5 ? "met" : "missed")
        else printf "ldmkit / cp wall: n/a (cp took 0.00 s); "
        if (pw != "") printf "bake_ref / ldmkit %.1fx (target >= 5: %s); ", pw / lw, (pw / lw >= 5 ? "met" : "missed")
        else printf "bake_ref / ldmkit: not measured; "
        if (ew != "") printf "bake_diffusers / ldmkit %.1fx (target >= 5: %s); ", ew / lw, (ew / lw >= 5 ? "met" : "missed")
        printf "ldmkit peak RSS %.0f MiB (target < 300 MB: %s)", lr / 1024, (lr * 1024 < 300e6 ? "met" : "missed")
    }')"
    lora_desc=""
    for l in "${loras[@]}"; do lora_desc+="${lora_desc:+, }\`$l\` ($(stat -c %s "$l") bytes, $(st_info "$l"))"; done
    raw=""
    for name in "${names[@]}"; do
        raw+=" $name $(cut -d' ' -f1-3 "$tmp/$job.$name.runs" | paste -sd',' | sed 's/,/, /g');"
    done
    sections+="$(
        printf '### %s: %s LoRA(s) into `%s`\n\n' "$job" "${#loras[@]}" "$model"
        printf 'MODEL `%s`: %s bytes, %s. LoRAs: %s. Output %s bytes. CONFIG: %s.\n\n' "$model" "$(stat -c %s "$model")" \
            "$(st_info "$model")" "$lora_desc" "$out_size" "${!cfgvar:-derived by bench/derive_config.py}"
        printf '| command | median wall s | + sync s | median peak RSS MiB | output bytes | wall / cp | wall / ldmkit | RSS / ldmkit | runs | MODEL cached before run |\n'
        printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
        printf '%s' "$table"
        printf '\nTargets: %s.\n\n' "$targets"
        [ -s "$tmp/$job.check" ] && printf 'Equality (round 1, `tests/python/compare_close.py`): %s\n\n' "$(cat "$tmp/$job.check")"
        printf 'Raw runs (wall s, peak RSS KiB, sync s):%s\n' "$raw"
    )"$'\n\n'
    cmds+="$(printf '%s bake-lora %s %s -o OUT.safetensors' "$bin" "$model" "${loras[*]}")"$'\n'
    cmds+="$(printf '%s tests/python/bake_ref.py %s CONFIG.json OUT.safetensors %s' "${py/#$HOME/\~}" "$model" "${loras[*]}")"$'\n'
    [ "$lean" != 0 ] && cmds+="$(printf '%s bench/bake_diffusers.py %s CONFIG.json OUT.safetensors %s' "${py/#$HOME/\~}" "$model" "${loras[*]}")"$'\n'
done

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
fs="$(df -hT "$tmp" | awk 'NR==2 {print $2 " on " $1 " (" $3 " total, " $5 " free)"}')"
mem="$(free -g | awk '/^Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
vers="$("$py" -c 'import torch, diffusers, peft, transformers; print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, peft {peft.__version__}, transformers {transformers.__version__}")')"
ldmkit_ver="$("$bin" --version 2>/dev/null || echo '?')"
loadavg="$(cut -d' ' -f1-3 /proc/loadavg)"
if [ "${WARM:-1}" != 0 ]; then
    warm_note="MODEL and the LoRAs were read once (\`cat > /dev/null\`, untimed) before every run but cp's;"
else
    warm_note="no warm-up read (WARM=0);"
fi
git_rev="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty')"

section="$(
    printf '## %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf '%s' "$sections"
    printf 'ldmkit and cp: median of %s round(s); Python: %s round(s) (PYN). Runs in table order within a round, each under `/usr/bin/time -f '"'"'%%e s %%M KB'"'"'` (MiB = KiB/1024); "+ sync s": the untimed `sync` right after the run. Page cache not dropped; %s the last column is the share of MODEL (cp: of its source) in the page cache just before each run (`fincore`). Python runs are killed when MemAvailable falls below %s MiB.\n\n' \
        "$n" "$pyn" "$warm_note" "$((memguard_kb / 1024))"
    printf 'Machine: %s CPU(s), %s; %s; filesystem %s; load average at the end %s (other jobs on the machine skew timings). %s; %s; git %s.\n' \
        "$(nproc)" "$cpu" "$mem" "$fs" "$loadavg" "$ldmkit_ver" "$vers" "$git_rev"
    printf '\nCommands:\n\n```sh\n%scp OUT.safetensors COPY.safetensors\n```\n' "$cmds"
)"

mkdir -p "$(dirname "$results")"
[ -s "$results" ] || printf '# ldmkit bake-lora vs diffusers (Python) vs cp\n\nProduced by `bench/bake_lora.sh`; see bench/README.md.\n\n' >"$results"
printf '%s\n\n' "$section" >>"$results"
printf '%s\n' "$section"
echo "appended to $results" >&2
