#!/usr/bin/env bash
# Install what the browser app needs to build and be tested, on a fresh machine; each step is
# skipped when already done. Nothing is downloaded at build time except from the registries
# (crates.io, npm, Debian). See ../shared/WEB.md for why these versions.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
# wasm-bindgen's CLI must be exactly the version Cargo.lock pins for the crate.
want="$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')"
if ! wasm-bindgen --version 2>/dev/null | grep -qF "$want"; then
    echo "setup: installing wasm-bindgen-cli $want (takes minutes, once)" >&2
    cargo install wasm-bindgen-cli --version "$want"
fi
# Chromium for the browser tests (Debian's package; the tests never download a browser).
if [ ! -x /usr/bin/chromium ] && [ "${LDMKIT_WEB_TESTS:-1}" = 1 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -q && $sudo apt-get install -y -q chromium
fi
# playwright-core (drives Chromium) and binaryen's wasm-opt (npm's: Debian's breaks the page).
(cd e2e && npm ci --no-audit --no-fund --silent)
