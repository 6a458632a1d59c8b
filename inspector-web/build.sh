#!/usr/bin/env bash
# Build the browser app into www/pkg/ (git-ignored): cargo for wasm32, wasm-bindgen (the exact
# version Cargo.lock pins), then wasm-opt from npm's binaryen when present (never Debian's
# binaryen 108: it breaks wasm-bindgen's output; see ../shared/WEB.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --target wasm32-unknown-unknown --release -p inspector-web --locked
rm -rf www/pkg && mkdir -p www/pkg
wasm-bindgen --target web --no-typescript --out-dir www/pkg \
    target/wasm32-unknown-unknown/release/inspector_web.wasm
opt=e2e/node_modules/.bin/wasm-opt
if [ -x "$opt" ]; then
    "$opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int www/pkg/inspector_web_bg.wasm -o www/pkg/inspector_web_bg.wasm
fi
