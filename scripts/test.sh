#!/usr/bin/env bash
# Runs every test of the project: unit, property and integration tests
# (including the guest-kernel tests in QEMU), then a bounded fuzz run of the
# image parser. Sets the machine up first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export CARGO_TERM_COLOR=never
# Warnings are errors here (and so in CI): a warning the build prints fails the run.
export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-D warnings"

echo "== cargo test --workspace"
cargo test --workspace --no-fail-fast 2>&1

if [ -x crates/image/fuzz/run.sh ] || [ -f crates/image/fuzz/run.sh ]; then
    echo "== fuzzing the image parser (${STASIS_FUZZ_SECONDS:-60} s)"
    bash crates/image/fuzz/run.sh "${STASIS_FUZZ_SECONDS:-60}"
fi

echo "== kernel engine: build stasis.ko and stasis_files.ko, test them in the stock 6.1 guest"
bash tests/kmod/run.sh
