#!/usr/bin/env bash
# Fetches Debian's stock kernels and their headers for the kernel matrix, without
# installing anything of another suite into this system: each suite gets a private apt
# configuration (its own package lists, an empty dpkg status), its packages are fetched
# with `apt-get download` and extracted with `dpkg-deb -x` into
#   $STASIS_GUEST_CACHE/kernel/RELEASE/   (default tests/guest/cache)
# where the guest harness boots them (`tests/guest/guest.sh --kernel-release RELEASE`)
# and Kbuild builds against them (KDIR=.../usr/src/linux-headers-RELEASE).
#
#   scripts/fetch-kernels.sh [SUITE...]      fetch (default: every suite below), print
#                                            "SUITE RELEASE KDIR CC" per kernel
#   scripts/fetch-kernels.sh --kdir RELEASE  print the KDIR of an already fetched RELEASE
#   scripts/fetch-kernels.sh --release SUITE print the release SUITE serves now
#
# Suites: bullseye (5.10), bookworm (6.1), bookworm-backports (6.12), sid (the newest).
# A kernel whose headers name a compiler this machine lacks (sid's is built with a newer
# GCC than Debian 12 has) is built inside a minimal chroot of its own suite
# ($cache/chroot/SUITE, made with debootstrap): see kmod_build_cmd in tests/matrix/run.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cache="${STASIS_GUEST_CACHE:-$root/tests/guest/cache}"
mirror="${STASIS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
all_suites="bullseye bookworm bookworm-backports sid"

say() { echo "fetch-kernels: $*" >&2; }
die() { echo "fetch-kernels: error: $*" >&2; exit 1; }

# apt_for SUITE: sets APT (the options of SUITE's private apt configuration), updating
# its lists once a day.
apt_for() {
    local s=$1 d="$cache/apt/$1"
    mkdir -p "$d/lists/partial" "$d/archives/partial"
    [ -f "$d/status" ] || : >"$d/status"
    echo "deb [signed-by=$keyring] $mirror $s main" >"$d/sources.list"
    APT=(-o "Dir::Etc::sourcelist=$d/sources.list" -o Dir::Etc::sourceparts=-
         -o "Dir::State::Lists=$d/lists" -o "Dir::State::status=$d/status"
         -o "Dir::Cache=$d" -o "Dir::Cache::archives=$d/archives" -o APT::Get::List-Cleanup=0
         -o Debug::NoLocking=1)
    if [ -z "$(find "$d/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null)" ]; then
        say "apt-get update ($s)"
        apt-get "${APT[@]}" update -qq </dev/null >/dev/null || die "apt-get update for $s failed"
    fi
}

# release_of SUITE: the kernel release linux-headers-amd64 points at in SUITE.
release_of() {
    apt_for "$1"
    apt-cache "${APT[@]}" depends linux-headers-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: linux-headers-\([0-9][^ ]*-amd64\)$/\1/p' | head -n1
}

# deps_named PKG PATTERN: PKG's direct dependencies whose names match PATTERN (ERE).
deps_named() {
    apt-cache "${APT[@]}" depends "$1" 2>/dev/null \
        | sed -n 's/^ *|\{0,1\}Depends: \([^ <>]*\)$/\1/p' | grep -E "$2" | sort -u || true
}

# fetch SUITE: download and extract SUITE's kernel image, modules and headers.
fetch() {
    local s=$1 rel kdir pkgs tmp f
    apt_for "$s"
    rel="$(release_of "$s")"
    [ -n "$rel" ] || die "$s: cannot tell the kernel release (no linux-headers-amd64?)"
    kdir="$cache/kernel/$rel"
    if [ ! -f "$kdir/.extracted-all" ]; then
        # The image (or, in newer suites, the packages it is split into), the headers,
        # their common part and the kbuild tools.
        pkgs=("linux-image-$rel" "linux-headers-$rel")
        mapfile -t -O ${#pkgs[@]} pkgs < <(deps_named "linux-image-$rel" "^linux-(binary|modules)-")
        mapfile -t -O ${#pkgs[@]} pkgs < <(deps_named "linux-headers-$rel" "^linux-(headers-.*-common|kbuild-)")
        say "$s: $rel: apt-get download ${pkgs[*]}"
        tmp="$(mktemp -d)"
        chmod 755 "$tmp"
        (cd "$tmp" && apt-get "${APT[@]}" download -qq "${pkgs[@]}" </dev/null 2>&1 | { grep -v unsandboxed >&2 || true; }) \
            || { rm -rf "$tmp"; die "$s: apt-get download ${pkgs[*]} failed"; }
        rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp"
        for f in "$tmp"/*.deb; do dpkg-deb -x "$f" "$kdir.tmp"; done
        rm -rf "$tmp"
        [ -d "$kdir.tmp/lib/modules/$rel" ] || [ -d "$kdir.tmp/usr/lib/modules/$rel" ] \
            || die "$s: no lib/modules/$rel in the packages"
        # Newer suites put modules (and the kernel) under usr/lib: the harness reads
        # lib/modules/RELEASE and boot/vmlinuz-RELEASE.
        if [ ! -d "$kdir.tmp/lib/modules/$rel" ]; then
            mkdir -p "$kdir.tmp/lib/modules"
            mv "$kdir.tmp/usr/lib/modules/$rel" "$kdir.tmp/lib/modules/$rel"
        fi
        if [ ! -f "$kdir.tmp/boot/vmlinuz-$rel" ] && [ -f "$kdir.tmp/lib/modules/$rel/vmlinuz" ]; then
            mkdir -p "$kdir.tmp/boot"
            cp "$kdir.tmp/lib/modules/$rel/vmlinuz" "$kdir.tmp/boot/vmlinuz-$rel"
        fi
        [ -f "$kdir.tmp/boot/vmlinuz-$rel" ] || die "$s: no vmlinuz for $rel in the packages"
        # The guest's initramfs takes modules as plain .ko files (busybox insmod).
        find "$kdir.tmp/lib/modules/$rel" -name '*.ko.xz' -print0 | xargs -0 -r -n 200 xz -d
        find "$kdir.tmp/lib/modules/$rel" -name '*.ko.zst' -print0 | xargs -0 -r -n 200 zstd -q -d --rm
        # The arch headers' Makefile includes the common part by absolute path.
        sed -i "s|/usr/src/|$kdir/usr/src/|" "$kdir.tmp/usr/src/linux-headers-$rel/Makefile"
        sed -i "s|$kdir.tmp/|$kdir/|" "$kdir.tmp/usr/src/linux-headers-$rel/Makefile"
        /sbin/depmod -b "$kdir.tmp" "$rel" || die "depmod -b $kdir.tmp $rel failed"
        touch "$kdir.tmp/.extracted" "$kdir.tmp/.extracted-all"
        echo "$s" >"$kdir.tmp/.suite"
        rm -rf "$kdir" && mv "$kdir.tmp" "$kdir"
    fi
    echo "$s $rel $kdir/usr/src/linux-headers-$rel $(kernel_cc "$rel")"
}

# kernel_cc RELEASE: the compiler the kernel was built with (its headers' CC).
kernel_cc() {
    sed -n 's/^CC = .*gcc-\([0-9]*\)$/gcc-\1/p' \
        "$cache/kernel/$1/usr/src/linux-headers-$1/.kernelvariables" 2>/dev/null | head -n1
}

case "${1:-}" in
    --kdir)
        [ $# = 2 ] || die "usage: $0 --kdir RELEASE"
        d="$cache/kernel/$2/usr/src/linux-headers-$2"
        [ -f "$d/Makefile" ] || die "kernel $2 not fetched (run scripts/fetch-kernels.sh)"
        echo "$d"
        ;;
    --cc)
        [ $# = 2 ] || die "usage: $0 --cc RELEASE"
        kernel_cc "$2"
        ;;
    --release)
        [ $# = 2 ] || die "usage: $0 --release SUITE"
        release_of "$2"
        ;;
    -*) die "usage: $0 [SUITE...] | --kdir RELEASE | --cc RELEASE | --release SUITE" ;;
    *)
        for s in ${*:-$all_suites}; do fetch "$s"; done
        ;;
esac
