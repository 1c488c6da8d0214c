#!/usr/bin/env bash
# Runs the whole test suite: build first (so timing is not spent twice), then
# test every crate, then print one closing line with the totals.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
cargo build --workspace --all-targets --quiet
status=0
# The Valkey and Postgres tests start their own servers; stop them however the run ends.
trap 'FF_VALKEY_PORT=6391 ./scripts/valkey.sh stop >/dev/null 2>&1 || true
      FF_VALKEY_CLUSTER_PORT=7191 ./scripts/valkey.sh cluster-stop >/dev/null 2>&1 || true
      ./scripts/postgres.sh stop >/dev/null 2>&1 || true' EXIT
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.txt || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.txt
exit "$status"
