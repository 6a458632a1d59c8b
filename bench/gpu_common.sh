# Shared by the GPU benchmarks (pre_encode_gpu.sh, train_gpu.sh); sourced from the repo root.
#
# prepare_gpu: here, build the CUDA binary (../shared/CUDA.md) into .bin/ldmkit.xz and fetch
#   the diffusers wheel into .whl (both travel with `carry`).
# setup_gpu: on the device, install the wheel, point at the device's CUDA libraries, unpack
#   the binary to /tmp/ldmkit, and record the GPU in $out/gpu.txt (sets $out).

prepare_gpu() {
    eval "$(../shared/tools/cuda-toolchain.sh env)"
    CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-../target-cuda}" cargo build --release -p ldmkit --features cudnn,nccl
    mkdir -p .bin
    strip -o /tmp/ldmkit-cuda "${CUDA_TARGET_DIR:-../target-cuda}/release/ldmkit"
    xz -6 -T2 -c /tmp/ldmkit-cuda > .bin/ldmkit.xz
    [ -f .whl/diffusers-0.42.1-py3-none-any.whl ] || python3 -m pip download --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 -d .whl diffusers==0.42.1
    echo "carry: .bin .whl"
}

setup_gpu() {
    out="${OUT:-/tmp/bench-out}"; mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    local nv=/opt/torch/.venv/lib/python3.12/site-packages/nvidia
    export LD_LIBRARY_PATH=$nv/cu13/lib:$nv/cudnn/lib:/usr/local/nvidia/lib64
    xz -dc .bin/ldmkit.xz > /tmp/ldmkit && chmod +x /tmp/ldmkit
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
}
