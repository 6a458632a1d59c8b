#!/usr/bin/env bash
# The browser tests: set up the toolchain, build the app and the CLI, run the end-to-end
# tests in headless Chromium (screenshots land in docs/).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
inspector-web/setup.sh
inspector-web/build.sh
cargo build --release --locked -p ldmkit
mkdir -p target/tmp
TMPDIR="$root/target/tmp" node --test e2e/
