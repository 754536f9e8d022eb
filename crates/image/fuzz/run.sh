#!/usr/bin/env bash
# Fuzz the stasis-image parser for SECONDS seconds.
#
#   crates/image/fuzz/run.sh SECONDS
#
# Installs cargo-fuzz if missing, seeds fuzz/corpus/parse with valid images
# (examples/gen_corpus.rs), runs the `parse` target on the stable toolchain
# (RUSTC_BOOTSTRAP=1 lets stable rustc take the nightly flags cargo-fuzz
# passes), and exits non-zero on any finding (crash, panic, sanitizer report,
# timeout, OOM) or if the fuzzer could not run. Findings land in
# fuzz/artifacts/parse/.
set -euo pipefail

secs=${1:?usage: $0 SECONDS}
here=$(cd "$(dirname "$0")" && pwd)
crate=$(dirname "$here")
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

corpus=$here/corpus/parse
artifacts=$here/artifacts/parse
mkdir -p "$corpus" "$artifacts"

# Seed corpus: valid images of several shapes.
(cd "$crate" && cargo run --quiet --features std --example gen_corpus -- "$corpus")

before=$(find "$artifacts" -type f | wc -l)
cd "$here"
status=0
# -max_len: seeds hold page-aligned data, so they are a few pages long.
cargo fuzz run -O --debug-assertions parse "$corpus" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 || status=$?
after=$(find "$artifacts" -type f | wc -l)

if [ "$status" -ne 0 ]; then
    echo "run.sh: fuzzer failed (exit $status); artifacts in $artifacts" >&2
    exit "$status"
fi
if [ "$after" -gt "$before" ]; then
    echo "run.sh: fuzzer left new artifacts in $artifacts" >&2
    exit 1
fi
echo "run.sh: no findings in ${secs}s"
