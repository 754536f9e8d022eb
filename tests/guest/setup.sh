#!/usr/bin/env bash
# Set up everything the QEMU guest harness (tests/guest) needs on a Debian 12 host:
#   - apt packages: qemu-system-x86, busybox-static, linux-headers-amd64, criu, kmod
#     (kmod: depmod here, and the guest's on-demand module loading runs its modprobe)
#     iptables, xz-utils (criu probes iptables; xz extracts vmlinux from the bzImage)
#   - Debian's stock kernel image (the one matching the installed linux-headers-amd64),
#     downloaded with `apt-get download` and extracted with `dpkg -x` into the cache
#     directory; it is never installed into the host system.
#
# Idempotent and quiet when everything is already in place. Works with CI=true and no stdin.
# Cache directory: $STASIS_GUEST_CACHE, else tests/guest/cache.
# Prints nothing on success unless something had to be done (or STASIS_SETUP_VERBOSE=1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${STASIS_GUEST_CACHE:-$here/cache}"
verbose="${STASIS_SETUP_VERBOSE:-0}"
export DEBIAN_FRONTEND=noninteractive

say() { echo "guest setup: $*" >&2; }
die() { echo "guest setup: error: $*" >&2; exit 1; }

sudo=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else sudo=""; fi
fi

apt_updated=0
apt_update() {
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        $sudo apt-get update -qq </dev/null >/dev/null || die "apt-get update failed"
        apt_updated=1
    fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

# 1. apt packages
pkgs=(qemu-system-x86 busybox-static linux-headers-amd64 criu kmod xz-utils iptables)
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_update
    say "apt-get install ${missing[*]}"
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

# 2. which kernel: the one the installed headers are for, so that modules built against
# linux-headers-amd64 load into the guest kernel.
hdr_dep="$(dpkg-query -W -f='${Depends}' linux-headers-amd64 2>/dev/null | tr ',' '\n' \
    | sed -n 's/^ *linux-headers-\([0-9][^ ]*-amd64\).*/\1/p' | head -n1)"
[ -n "$hdr_dep" ] || die "cannot tell the kernel release from linux-headers-amd64's dependencies"
release="$hdr_dep"
hdr_version="$(dpkg-query -W -f='${Version}' "linux-headers-$release" 2>/dev/null || true)"

kdir="$cache/kernel/$release"
if [ ! -f "$kdir/.extracted" ] || [ ! -f "$kdir/boot/vmlinuz-$release" ]; then
    mkdir -p "$cache/debs"
    pkg="linux-image-$release"
    deb=""
    for f in "$cache/debs/${pkg}_"*_amd64.deb; do [ -f "$f" ] && deb="$f"; done
    if [ -z "$deb" ]; then
        say "apt-get download $pkg${hdr_version:+ (= $hdr_version)}"
        # apt-get download as root warns when _apt cannot write the target dir: download
        # into a temp dir we own, then move.
        tmpd="$(mktemp -d)"
        chmod 755 "$tmpd"
        want="$pkg"
        [ -n "$hdr_version" ] && want="$pkg=$hdr_version"
        if ! (cd "$tmpd" && apt-get download -qq "$want" </dev/null >/dev/null 2>&1); then
            apt_update
            (cd "$tmpd" && apt-get download -qq "$want" </dev/null >/dev/null 2>&1) \
                || (cd "$tmpd" && apt-get download -qq "$pkg" </dev/null >/dev/null 2>&1) \
                || { rm -rf "$tmpd"; die "apt-get download $pkg failed (is linux-headers-amd64 older than the archive? try: apt-get install --only-upgrade linux-headers-amd64)"; }
        fi
        mv "$tmpd"/*.deb "$cache/debs/"
        rm -rf "$tmpd"
        for f in "$cache/debs/${pkg}_"*_amd64.deb; do [ -f "$f" ] && deb="$f"; done
    fi
    say "extracting $(basename "$deb") into $kdir"
    rm -rf "$kdir.tmp"
    mkdir -p "$kdir.tmp"
    dpkg -x "$deb" "$kdir.tmp"
    [ -f "$kdir.tmp/boot/vmlinuz-$release" ] || die "$deb has no boot/vmlinuz-$release"
    [ -d "$kdir.tmp/lib/modules/$release" ] || die "$deb has no lib/modules/$release"
    touch "$kdir.tmp/.extracted"
    rm -rf "$kdir"
    mv "$kdir.tmp" "$kdir"
fi
# modules.dep/modules.alias for the guest's modprobe (the package ships none: dpkg's
# postinst would run depmod).
if [ ! -s "$kdir/lib/modules/$release/modules.dep" ]; then
    say "depmod $release"
    depmod=/sbin/depmod
    [ -x "$depmod" ] || depmod="$(command -v depmod || true)"
    [ -n "$depmod" ] || die "depmod not found (package kmod)"
    "$depmod" -b "$kdir" "$release" || die "depmod -b $kdir $release failed"
fi
# The harness reads this to pick the kernel.
if [ "$(cat "$cache/kernel/release" 2>/dev/null || true)" != "$release" ]; then
    echo "$release" > "$cache/kernel/release"
fi

# 3. sanity checks
command -v qemu-system-x86_64 >/dev/null 2>&1 || die "qemu-system-x86_64 not found after install"
[ -x /bin/busybox ] || die "/bin/busybox (busybox-static) not found after install"
[ -r "$kdir/boot/vmlinuz-$release" ] || die "cannot read $kdir/boot/vmlinuz-$release (run as root?)"

if [ "$verbose" = 1 ]; then
    say "ok: kernel $release in $kdir"
fi
