#!/usr/bin/env bash
# Installs everything stasis needs on a fresh Debian 12 machine (root).
# Idempotent and quiet when all is in place; safe with CI=true and no stdin.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'setup: %s\n' "$*" >&2; }

# Debian packages: C toolchain for the workloads, the guest harness's QEMU,
# stock kernel and headers, busybox for its initramfs, criu for comparisons.
need_pkgs=()
for p in build-essential pkg-config python3 qemu-system-x86 busybox-static linux-headers-amd64 criu; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" </dev/null >/dev/null
fi

# Rust pieces: the restorer blob is built for x86_64-unknown-none with build-std.
if command -v rustup >/dev/null; then
    rustup component list --installed 2>/dev/null | grep -q '^rust-src' || { log "adding rust-src"; rustup component add rust-src >/dev/null; }
    rustup target list --installed 2>/dev/null | grep -q '^x86_64-unknown-none$' || { log "adding x86_64-unknown-none"; rustup target add x86_64-unknown-none >/dev/null; }
fi

# The guest harness: the stock kernel package, extracted (not installed).
if [ -x tests/guest/setup.sh ] || [ -f tests/guest/setup.sh ]; then
    bash tests/guest/setup.sh
fi
