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

case "${1:-}" in
prepare)
    eval "$(../shared/tools/cuda-toolchain.sh env)"
    CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-../target-cuda}" cargo build --release -p ldmkit --features cudnn
    mkdir -p .bin
    strip -o /tmp/ldmkit-cuda "${CUDA_TARGET_DIR:-../target-cuda}/release/ldmkit"
    xz -6 -T2 -c /tmp/ldmkit-cuda > .bin/ldmkit.xz
    [ -f .whl/diffusers-0.42.1-py3-none-any.whl ] || python3 -m pip download --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1
    echo "carry: .bin .whl"
    ;;
run)
    out="${OUT:-/tmp/bench-out}"; mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    nv=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
    export LD_LIBRARY_PATH=$nv/cu13/lib:$nv/cudnn/lib:/usr/local/nvidia/lib64
    xz -dc .bin/ldmkit.xz > /tmp/ldmkit && chmod +x /tmp/ldmkit
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
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
