#!/bin/busybox sh
# /init of the stasis-guest initramfs (busybox-static). Embedded by tests/guest/src/lib.rs.
#
# Loads the 9p/overlay modules, mounts the host's root (read-only 9p share "hostroot")
# with a tmpfs overlay on top at /newroot, mounts the per-run read-write share "hostrun"
# at /newroot/run/stasis-guest, insmods the requested modules, runs run.sh from the share
# chrooted into /newroot, writes the exit status and dmesg to the share, and powers off.
# Lines starting with "STASIS-GUEST: " on the console are read by the host.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "STASIS-GUEST: $*"; }
off() { sync; poweroff -f; sleep 10; echo o > /proc/sysrq-trigger; }
fail() {
    say "boot-failed: $*"
    dmesg -s 4194304 2>/dev/null | tail -n 30
    off
}

say "init $(up)"

while read -r m; do
    [ -n "$m" ] || continue
    out="$(insmod "/modules/$m.ko" 2>&1)" || fail "insmod $m: $out"
done < /modules.list

mkdir -p /hostrun /host /ovl /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=none hostrun /hostrun \
    || fail "cannot mount the hostrun 9p share"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,cache=loose,ro hostroot /host \
    || fail "cannot mount the hostroot 9p share"
mount -t tmpfs -o mode=0755 tmpfs /ovl || fail "tmpfs for the overlay"
mkdir -p /ovl/upper /ovl/work
mount -t overlay -o lowerdir=/host,upperdir=/ovl/upper,workdir=/ovl/work overlay /newroot \
    || fail "cannot mount the overlay"

R=/newroot
mount -t proc proc $R/proc || fail "proc in chroot"
mount -t sysfs sysfs $R/sys || fail "sysfs in chroot"
mount -t devtmpfs devtmpfs $R/dev || fail "devtmpfs in chroot"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=0755 tmpfs $R/run || fail "tmpfs /run"
# /tmp stays the overlay's: the host's /tmp shows through (a CI clone may live
# there) and writes go to the tmpfs upper layer.
chmod 1777 $R/tmp 2>/dev/null
mkdir -p $R/run/stasis-guest $R/run/lock $R/run/hostroot
# The host's root as is, read-only.
mount -o bind,ro /host $R/run/hostroot
mount -o move /hostrun $R/run/stasis-guest || fail "cannot move the hostrun share"
[ -d /sys/kernel/debug ] && mount -t debugfs debugfs $R/sys/kernel/debug 2>/dev/null
[ -d /sys/fs/cgroup ] && mount -t cgroup2 cgroup2 $R/sys/fs/cgroup 2>/dev/null

S=$R/run/stasis-guest
ip link set lo up || ifconfig lo 127.0.0.1 up || fail "cannot bring lo up"
hostname stasis-guest

# Settings from the host (KMODDIR: the extracted package's lib/modules/RELEASE, with
# modules.dep from depmod).
[ -f $S/config.sh ] && . $S/config.sh
# On-demand module loading (criu needs sock_diag, tun, veth, nf_tables...): the kernel
# runs /proc/sys/kernel/modprobe in init's root (this initramfs), so point it at a
# wrapper that runs the host's modprobe in the chroot, and make the package's modules
# appear under /lib/modules/RELEASE there.
if [ -n "$KMODDIR" ] && [ -f "$R$KMODDIR/modules.dep" ]; then
    D=$R/lib/modules/$(uname -r)
    mkdir -p $D
    for e in "$R$KMODDIR"/*; do
        n=${e##*/}
        [ -e "$D/$n" ] || ln -s "$KMODDIR/$n" "$D/$n"
    done
    if [ -L $R/sbin/modprobe ] || [ -x $R/sbin/modprobe ]; then
        echo /sbin/stasis-modprobe > /proc/sys/kernel/modprobe
    fi
    # Static device nodes that trigger module loading on open (as kmod static-nodes).
    if [ -f "$R$KMODDIR/modules.devname" ]; then
        while read -r mod name dev; do
            case "$mod" in \#*|"") continue ;; esac
            t=${dev%%[0-9]*}; mm=${dev#?}
            [ -e "$R/dev/$name" ] && continue
            mkdir -p "$R/dev/${name%/*}"
            mknod "$R/dev/$name" "$t" "${mm%%:*}" "${mm##*:}" 2>/dev/null
        done < "$R$KMODDIR/modules.devname"
    fi
fi

if [ -f $S/insmod.list ]; then
    while read -r ko; do
        [ -n "$ko" ] || continue
        if ! insmod "/host$ko" > $S/insmod.log 2>&1; then
            echo "$ko" > $S/insmod.failed
            dmesg -s 4194304 > $S/dmesg 2>&1
            say "insmod-failed: $ko"
            off
        fi
        say "insmod-ok: $ko"
    done < $S/insmod.list
fi

say "command-start $(up)"
chroot $R /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TERM=dumb LANG=C.UTF-8 USER=root LOGNAME=root SHELL=/bin/bash \
    STASIS_GUEST=1 STASIS_GUEST_RUN=/run/stasis-guest \
    /bin/bash /run/stasis-guest/run.sh < /dev/null > $S/output 2>&1
rc=$?
say "command-end $(up) status=$rc"
dmesg -s 4194304 > $S/dmesg 2>&1
echo $rc > $S/status.tmp && mv $S/status.tmp $S/status
off
