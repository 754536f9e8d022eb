#!/usr/bin/python3
"""Print CRIU's own timing stats (stats-dump / stats-restore in an images dir) as
key=value pairs, times in ms.  Standard library only (no pycriu): a CRIU image is
u32 magic(s), then entries of u32 size + protobuf; stats_entry{dump=1, restore=2}.

    criu_stats.py DIR  ->  criu_freezing_ms=.. criu_frozen_ms=.. criu_memdump_ms=..
                           criu_memwrite_ms=.. criu_pages_scanned=.. criu_pages_written=..
                           [criu_forking_ms=.. criu_restore_ms=..]
"""
import os
import struct
import sys

IMG_COMMON, IMG_SERVICE, STATS = 1414939417, 1427134784, 1460220678
DUMP = {1: "freezing_time", 2: "frozen_time", 3: "memdump_time", 4: "memwrite_time",
        5: "pages_scanned", 6: "pages_skipped_parent", 7: "pages_written"}
RESTORE = {1: "pages_compared", 2: "pages_skipped_cow", 3: "forking_time",
           4: "restore_time", 5: "pages_restored"}


def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return v, i


def fields(b):
    """Decode a protobuf message: {field number: value or bytes}."""
    out, i = {}, 0
    while i < len(b):
        key, i = varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            out[num], i = varint(b, i)
        elif wt == 2:
            n, i = varint(b, i)
            out[num], i = b[i:i + n], i + n
        elif wt == 5:
            out[num], i = struct.unpack_from("<I", b, i)[0], i + 4
        elif wt == 1:
            out[num], i = struct.unpack_from("<Q", b, i)[0], i + 8
        else:
            raise ValueError("unsupported wire type %d" % wt)
    return out


def load(path):
    b = open(path, "rb").read()
    m, = struct.unpack_from("<I", b, 0)
    i = 4
    if m in (IMG_COMMON, IMG_SERVICE):
        m, = struct.unpack_from("<I", b, 4)
        i = 8
    if m != STATS:
        raise ValueError("%s: not a CRIU stats image (magic 0x%x)" % (path, m))
    n, = struct.unpack_from("<I", b, i)
    return fields(b[i + 4:i + 4 + n])


def main():
    d = sys.argv[1]
    kv = []
    p = os.path.join(d, "stats-dump")
    if os.path.exists(p):
        e = fields(load(p).get(1, b""))
        s = {DUMP[k]: v for k, v in e.items() if k in DUMP}
        for k in ("freezing_time", "frozen_time", "memdump_time", "memwrite_time"):
            if k in s:
                kv.append("criu_%s_ms=%.1f" % (k[:-5], s[k] / 1000.0))
        for k in ("pages_scanned", "pages_written"):
            if k in s:
                kv.append("criu_%s=%d" % (k, s[k]))
    p = os.path.join(d, "stats-restore")
    if os.path.exists(p):
        e = fields(load(p).get(2, b""))
        s = {RESTORE[k]: v for k, v in e.items() if k in RESTORE}
        if "forking_time" in s:
            kv.append("criu_forking_ms=%.1f" % (s["forking_time"] / 1000.0))
        if "restore_time" in s:
            kv.append("criu_restore_ms=%.1f" % (s["restore_time"] / 1000.0))
    print(" ".join(kv))


if __name__ == "__main__":
    main()
