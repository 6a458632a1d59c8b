#!/usr/bin/env bash
# Full-UNet training on the GPU test machine: `ldmkit bench-train` (SD 1.5 UNet at 512²,
# batch 1/4/8, bf16 compute with f32 master weights, with and without recomputation)
# against PyTorch + diffusers (bench/torch_train.py) in the same device call, after
# checking the GPU's output and gradients against the CPU's on the tiny fixtures.
# Results go to $OUT; bench/results/train-gpu.md keeps them with the machine.
#
# Here (builds the CUDA binary, ../shared/CUDA.md; fetches the diffusers wheel):
#   bench/train_gpu.sh prepare
# On the device (from the repo root, carrying .bin and .whl):
#   bash bench/train_gpu.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_common.sh

case "${1:-}" in
prepare)
    prepare_gpu
    ;;
run)
    setup_gpu
    if [ -z "${SKIP_CHECK:-}" ]; then
        for m in sd1 sd2; do
            /tmp/ldmkit bench-train --device cuda --check "tests/fixtures/layouts/${m}_tiny_ldm.safetensors" \
                --json "$out/train-check.jsonl"
        done
    fi
    BATCH="${BATCH:-1,4,8}" CKPT="${CKPT:-off,on}"
    /tmp/ldmkit bench-train --device cuda --batch "$BATCH" --checkpointing "$CKPT" \
        --iters "${ITERS:-10}" --json "$out/train.jsonl" 2>&1 | tee "$out/ldmkit.txt"
    [ -n "${SKIP_TORCH:-}" ] || python3 bench/torch_train.py --batch "$BATCH" --checkpointing "$CKPT" \
        --iters "${ITERS:-10}" | tee -a "$out/train.jsonl"
    ;;
*)
    echo "usage: bench/train_gpu.sh prepare | run" >&2; exit 2 ;;
esac
