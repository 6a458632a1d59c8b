#!/usr/bin/env bash
# Data-parallel training through NCCL on the GPU test machine. On the one-GPU kind this runs
# the whole multi-GPU path at world size 1 — launcher, NCCL id, one rank process, NCCL
# communicator, bucketed gradient sums, the stop vote — against plain one-process training
# (same losses expected), resumes a --gpus run without it, and checks the launcher's
# answers to too many GPUs and to a rank killed mid-run. On a multi-GPU kind it also runs 2
# and 4 ranks (same global batch) and times them.
#
# Here:       bench/train_dp_gpu.sh prepare     (CUDA+NCCL binary, tiny pre-encoded data)
# On device:  bash bench/train_dp_gpu.sh run    (carrying .bin .whl .dp-data)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_common.sh
model=tests/fixtures/layouts/sd1_tiny_ldm.safetensors

case "${1:-}" in
prepare)
    prepare_gpu
    cargo build -q -p ldmkit
    rm -rf .dp-data && mkdir -p .dp-data/img
    python3 - <<'PY'
import struct, zlib
def png(w, h, seed):
    raw = b"".join(b"\0" + bytes(((x * 7 + y * 3 + seed * 31 + c * 50) % 256 for x in range(w) for c in range(3))) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
for i in range(8):
    open(f".dp-data/img/{i}.png", "wb").write(png(128, 128, i))
    open(f".dp-data/img/{i}.txt", "w").write(f"a photo of thing number {i}")
PY
    target/debug/ldmkit pre-encode -q --model "$model" --tokenizer tests/fixtures/tokenizer \
        --data .dp-data/img --out .dp-data/enc --resolution 128
    echo "carry: .bin .whl .dp-data"
    ;;
run)
    setup_gpu
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib
    export NCCL_NVLS_ENABLE=0
    runs=/tmp/dp-runs; rm -rf "$runs"; mkdir -p "$runs" "$out/logs"
    train=(/tmp/ldmkit train -q --model "$model" --data .dp-data/enc --batch-size 4 --grad-accum 2
        --lr 1e-3 --sample-every 0 --save-every 4 --seed 7 --precision f32 --ema --noise-offset 0.1)
    # Twice alone: the GPU's own run-to-run spread (cuDNN's gradient algorithms, TF32).
    "${train[@]}" --steps 8 --out "$runs/plain"
    "${train[@]}" --steps 8 --out "$runs/plain-again"
    "${train[@]}" --steps 8 --out "$runs/gpus1" --gpus 1
    # Half on the launcher, the rest resumed in one plain process.
    "${train[@]}" --steps 4 --out "$runs/switched" --gpus 1
    /tmp/ldmkit train -q --resume "$runs/switched" --steps 8
    gpus=$(nvidia-smi -L | wc -l)
    for n in 2 4 8; do
        if [ "$gpus" -ge "$n" ]; then "${train[@]}" --steps 8 --out "$runs/gpus$n" --gpus "$n"; fi
    done
    for r in "$runs"/*; do cp "$r/loss.csv" "$out/logs/$(basename "$r").csv"; done
    python3 - "$out/logs" <<'PY' | tee "$out/compare.txt"
import sys, os
logs = sys.argv[1]
def log(run):
    rows = [l.split(",") for l in open(os.path.join(logs, run + ".csv")).read().split("\n")[1:] if l]
    return [(int(r[0]), float(r[1]), float(r[5])) for r in rows]
want = log("plain")
for run in sorted(f[:-4] for f in os.listdir(logs)):
    if run == "plain":
        continue
    got = log(run)
    worst = max(max(abs(a[1] - b[1]) / abs(a[1]), abs(a[2] - b[2]) / abs(a[2])) for a, b in zip(want, got))
    print(f"{run}: {len(got)} steps, largest relative loss / gradient-norm difference to plain: {worst:.2e}")
PY
    # The data-parallel path's cost at world size 1 on the full-size UNet (bf16, batch 1 and 8).
    for flag in "" --nccl; do
        /tmp/ldmkit bench-train --device cuda --batch 1,8 --checkpointing off --iters 8 $flag \
            --json "$out/bench.jsonl" | tail -3
    done
    # With the GPUs of a multi-GPU kind: samples/s of the same global batch per GPU count.
    echo "--- more GPUs than the machine has:"
    "${train[@]}" --steps 2 --out "$runs/too-many" --gpus $((gpus + 1)) && echo "UNEXPECTED: accepted" || echo "exit $?"
    echo "--- a rank killed mid-run:"
    "${train[@]}" --steps 100000 --out "$runs/killed" --gpus 1 & launcher=$!
    sleep 20
    rank=$(pgrep -P "$launcher" | head -1)
    kill -9 "$rank"
    wait "$launcher" && echo "UNEXPECTED: exit 0" || echo "launcher exit $?"
    ;;
*)
    echo "usage: bench/train_dp_gpu.sh prepare | run" >&2; exit 2 ;;
esac
