#!/usr/bin/env bash
# Pre-encoding on the GPU test machine: ldmkit's VAE encode images/s at 512² and CLIP
# texts/s, against PyTorch (diffusers VAE, transformers CLIP) in the same device call, plus
# `ldmkit pre-encode` end to end on 512 JPEGs. Results go to $OUT (bench/results/ keeps a
# copy with the machine they came from).
#
# Here (builds the CUDA binary, ../shared/CUDA.md; fetches the diffusers wheel):
#   bench/pre_encode_gpu.sh prepare
# On the device (run from the repo root, carrying .bin and .whl):
#   bash bench/pre_encode_gpu.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/gpu_common.sh

case "${1:-}" in
prepare)
    prepare_gpu
    ;;
run)
    setup_gpu
    model=/tmp/sd15-encoders data=/tmp/jpegs
    PRECISIONS="${PRECISIONS:-f32,bf16,f16}"
    python3 bench/torch_encode.py make-model "$model"
    cp -r tests/fixtures/tokenizer "$model/tokenizer"
    python3 bench/torch_encode.py images "$data" 512
    # Accuracy of the CUDA path against the CPU path (which the tests hold against diffusers),
    # on the first 16 images, latents stored in f32.
    if [ -z "${SKIP_CHECK:-}" ]; then
        mkdir -p /tmp/jpegs16 && for f in $(ls "$data" | head -32); do ln -sf "$data/$f" /tmp/jpegs16/; done
        enc() { rm -rf "$1"; shift; /tmp/ldmkit pre-encode -q --model "$model" --data /tmp/jpegs16 --dtype f32 --out "$@"; }
        enc /tmp/chk-cpu /tmp/chk-cpu --device cpu
        enc /tmp/chk-tf32 /tmp/chk-tf32 --device cuda
        enc /tmp/chk-f32 /tmp/chk-f32 --device cuda --no-tf32
        enc /tmp/chk-bf16 /tmp/chk-bf16 --device cuda --precision bf16
        for v in f32 tf32 bf16; do
            python3 bench/compare_encoded.py /tmp/chk-cpu "/tmp/chk-$v" --label "cuda $v vs cpu f32" | tee -a "$out/accuracy.jsonl"
        done
    fi
    # Both implementations, one after the other, on the same card.
    [ -n "${SKIP_TORCH:-}" ] || python3 bench/torch_encode.py bench "$model" | tee "$out/encoders.jsonl"
    /tmp/ldmkit bench-encoders --model "$model" --tokenizer "$model/tokenizer" --device cuda \
        --precision "${PRECISIONS:-f32,bf16,f16}" ${STAGES:+--stages} | tee -a "$out/encoders.jsonl"
    for p in ${PRECISIONS//,/ }; do
        rm -rf "/tmp/enc-$p"
        start=$(date +%s.%N)
        /tmp/ldmkit pre-encode -q --model "$model" --data "$data" --out "/tmp/enc-$p" \
            --device cuda --precision "$p" --batch-size 8
        end=$(date +%s.%N)
        python3 -c "import json,sys; n=512; s=$end-$start; print(json.dumps({'impl':'ldmkit pre-encode','precision':'$p','images':n,'seconds':s,'images_per_s':n/s}))" \
            | tee -a "$out/end_to_end.jsonl"
    done
    cp "/tmp/enc-${PRECISIONS##*,}/manifest.json" "$out/manifest.json"
    ;;
*)
    sed -n 2,12p "$0"; exit 2 ;;
esac
