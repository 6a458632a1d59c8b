#!/usr/bin/env bash
# The browser's large-file benchmark: a full-size SD 1.x training checkpoint (14.6 GB) through
# strip and merge in headless Chromium, each download checked against the CLI's output for the
# same recipe, with Chromium's peak memory and click-to-download time appended to
# bench/results/browser-large.md. Needs ~30 GB free disk under bench/out.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-$(tests/python/venv.sh | tail -n 1)}"
[ -f bench/out/sd1-training.ckpt ] || "$PY" bench/gen_sd1_training_ckpt.py bench/out/sd1-training.ckpt
[ -f bench/out/sd1-release.ckpt ] || "$PY" bench/gen_sd1_release.py
inspector-web/setup.sh
inspector-web/build.sh
cargo build --release --locked -p ldmkit
mkdir -p target/tmp
LDMKIT_LARGE=1 TMPDIR="$(pwd)/target/tmp" node --test --test-timeout=7200000 e2e/large.test.mjs
