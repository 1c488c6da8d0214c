#!/usr/bin/env bash
# Runs the whole test suite: build first (so timing is not spent twice), then test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --all-targets --quiet
cargo test --workspace --quiet 2>&1 | tee target/test-output.txt
