#!/usr/bin/env python3
"""Turn the guest's machine-readable lines (bench/in-guest.sh) into bench/RESULTS.md.

Medians per tool and configuration, ratios stasis/CRIU per metric, the machine's
limits, failures. Standard library only. Never fills a cell that was not measured.

    report.py --results results.txt --out RESULTS.md --command "bash bench/run.sh" ...
"""
import argparse
import os
import shlex
import statistics
import sys
from collections import OrderedDict, defaultdict

METRICS = [
    # key, label, unit scale, format
    ("ckpt_ms", "checkpoint, wall (ms)"),
    ("frozen_ms", "frozen (ms)"),
    ("restore_ms", "restart to running, wall (ms)"),
    ("image_bytes", "image size (MiB)"),
]
TOOL_LABEL = {"criu": "CRIU 3.17", "stasis": "stasis (user engine)",
              "stasis-kernel": "stasis (kernel engine)"}


def parse_line(line):
    """'KIND k=v k="v w" ...' -> (KIND, {k: v})."""
    try:
        parts = shlex.split(line)
    except ValueError:
        parts = line.split()
    if not parts:
        return None, {}
    kv = OrderedDict()
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            kv[k] = v
    return parts[0], kv


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def fmt(v, key):
    if v is None:
        return "—"
    if key == "image_bytes":
        return "%.1f" % (v / 1048576.0)
    if v >= 100:
        return "%.0f" % v
    return "%.1f" % v


def med_range(vals, key):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, "—"
    m = statistics.median(vals)
    if len(vals) == 1:
        return m, fmt(m, key)
    return m, "%s (%s–%s)" % (fmt(m, key), fmt(min(vals), key), fmt(max(vals), key))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="bash bench/run.sh")
    ap.add_argument("--started", default="?")
    ap.add_argument("--seconds", type=int, default=None)
    ap.add_argument("--guest-status", default="?")
    ap.add_argument("--guest-summary", default="")
    ap.add_argument("--host", default="?")
    ap.add_argument("--host-load", default="?")
    ap.add_argument("--other-qemu", default="?")
    ap.add_argument("--revision", default="?")
    a = ap.parse_args()

    info, limits, notes, fails = {}, defaultdict(list), [], []
    results = defaultdict(list)          # (tool, threads, mib) -> [kv]
    attempts = defaultdict(int)
    configs, tools = [], []
    kernel = None
    lines = []
    if os.path.exists(a.results):
        lines = open(a.results, errors="replace").read().splitlines()
    for line in lines:
        kind, kv = parse_line(line)
        if kind == "INFO":
            info.update(kv)
        elif kind == "LIMIT":
            limits[kv.get("name", "?")].append(kv)
        elif kind == "NOTE":
            notes.append(kv)
        elif kind == "KERNEL":
            kernel = kv
        elif kind in ("RESULT", "FAIL"):
            tool = kv.get("tool", "?")
            cfg = (int(kv.get("threads", 0)), int(kv.get("mib", 0)))
            if kv.get("rep") == "probe":
                fails.append(kv)
                continue
            if cfg not in configs:
                configs.append(cfg)
            if tool not in tools:
                tools.append(tool)
            attempts[(tool,) + cfg] += 1
            if kind == "RESULT" and kv.get("verdict") == "ok":
                results[(tool,) + cfg].append(kv)
            elif kind == "RESULT":   # never timed silently: a bad verdict is a failure
                kv = dict(kv, stage="verdict", error=kv.get("verdict", "?"))
                fails.append(kv)
            else:
                fails.append(kv)
    for t in ("criu", "stasis"):
        if t not in tools:
            tools.append(t)
    tools = [t for t in ("criu", "stasis", "stasis-kernel") if t in tools] + \
        [t for t in tools if t not in ("criu", "stasis", "stasis-kernel")]
    reng = {r.get("restart_engine") for k, v in results.items() if k[0] == "stasis-kernel" for r in v}
    if reng == {"user"}:
        TOOL_LABEL["stasis-kernel"] = "stasis (kernel engine checkpoint, user engine restart)"
    configs.sort(key=lambda c: (c[1], c[0]))

    memcpy = [num(l.get("median_mib_s")) for l in limits.get("memcpy", [])]
    memcpy = [v for v in memcpy if v]
    dd = [num(l.get("mib_s")) for l in limits.get("tmpfs_write", [])]
    dd = [v for v in dd if v]
    fwrite = [num(l.get("mib_s")) for l in limits.get("file_write", [])]
    fwrite = [v for v in fwrite if v]
    tmpfs = dd + fwrite
    # A floor is a lower bound: use the best rate seen in the run.
    memcpy_m = max(memcpy) if memcpy else None
    tmpfs_m = max(tmpfs) if tmpfs else None

    def samples(name, key):
        out = []
        for l in limits.get(name, []):
            v = num(l.get(key))
            if v:
                out.append("%.0f%s" % (v, " (%s)" % l["when"] if "when" in l else ""))
        return ", ".join(out) or "—"

    o = []
    w = o.append
    w("# stasis vs CRIU — checkpoint/restart benchmark")
    w("")
    w("Produced by `%s` (bench/run.sh → one QEMU guest → bench/in-guest.sh → bench/report.py)." % a.command)
    w("")
    w("| | |")
    w("|---|---|")
    w("| date | %s |" % a.started)
    w("| guest kernel | %s (Debian stock, QEMU TCG, %s vCPUs, %s MiB RAM, THP `%s`) |" % (
        info.get("kernel", "?"), info.get("cpus", "?"),
        (int(info["mem_kib"]) // 1024) if info.get("mem_kib", "").isdigit() else "?",
        info.get("thp", "?")))
    w("| host | %s |" % a.host)
    w("| host load average (1/5/15 min) / another QEMU seen | %s / %s |" % (a.host_load, a.other_qemu))
    w("| tools | %s; %s |" % (info.get("criu", "criu ?"), info.get("stasis", "stasis ?")))
    w("| source revision | %s |" % a.revision)
    w("| run | %s s in all (build + boot + benchmark); guest exit status %s%s |" % (
        a.seconds if a.seconds is not None else "?", a.guest_status,
        "; " + a.guest_summary.replace("|", "/") if a.guest_summary else ""))
    w("")
    if not lines:
        w("**No results: the guest produced no output** (status %s)." % a.guest_status)
        w("")
    if a.guest_status not in ("0", "?"):
        w("**The guest run did not finish normally (exit status %s: 124 timeout, 125 boot, "
          "127 guest died). Only the lines it wrote before are reported.**" % a.guest_status)
        w("")
    if "done" not in info and lines:
        w("**The guest script did not reach its end; the tables are partial.**")
        w("")

    w("## Machine limits (same guest)")
    w("")
    w("| limit | best | all samples, MiB/s (when) |")
    w("|---|---|---|")
    w("| memcpy 256 MiB (`memcpy_bw`, median of 5 copies per sample) | %s | %s |" % (
        "%.0f MiB/s" % memcpy_m if memcpy_m else "—", samples("memcpy", "median_mib_s")))
    w("| tmpfs write 1 GiB (`dd if=/dev/zero bs=1M conv=fsync`) | %s | %s |" % (
        "%.0f MiB/s" % max(dd) if dd else "—", samples("tmpfs_write", "mib_s")))
    w("| tmpfs write 1 GiB from memory (`memcpy_bw --write`: 8 MiB write()s of a non-zero buffer, fsync) | %s | %s |" % (
        "%.0f MiB/s" % max(fwrite) if fwrite else "—", samples("file_write", "mib_s")))
    w("")
    w("Measured at the start and at the end of the run; the spread shows how much the host's "
      "load moved the guest. The floors below use the best rate seen.")
    w("")

    w("## Results")
    w("")
    w("Median over the runs whose verdict was `ok` (min–max in brackets); ratio = "
      "stasis median / CRIU median (< 1: stasis is faster or smaller). `n` = ok runs / attempted runs.")
    w("")
    others = [t for t in tools if t not in ("criu",)]
    for cfg in configs:
        th, mib = cfg
        w("### %d thread%s, %d MiB touched" % (th, "" if th == 1 else "s", mib))
        w("")
        head = ["metric", TOOL_LABEL.get("criu")]
        for t in others:
            head += [TOOL_LABEL.get(t, t), "ratio %s/CRIU" % t]
        w("| " + " | ".join(head) + " |")
        w("|" + "---|" * len(head))
        crit_m = {}
        for key, label in METRICS:
            row = [label]
            cm, cs = med_range([num(r.get(key)) for r in results[("criu",) + cfg]], key)
            crit_m[key] = cm
            row.append(cs)
            for t in others:
                sm, ss = med_range([num(r.get(key)) for r in results[(t,) + cfg]], key)
                row.append(ss)
                row.append("**%.2f**" % (sm / cm) if sm is not None and cm else "—")
            w("| " + " | ".join(row) + " |")
        row = ["n (ok / attempted)"]
        row.append("%d / %d" % (len(results[("criu",) + cfg]), attempts[("criu",) + cfg]))
        for t in others:
            row.append("%d / %d" % (len(results[(t,) + cfg]), attempts[(t,) + cfg]))
            row.append("")
        w("| " + " | ".join(row) + " |")
        w("")
        # CRIU's own breakdown
        c = results[("criu",) + cfg]
        if c:
            parts = []
            for k, lab in (("criu_freezing_ms", "freezing"), ("criu_frozen_ms", "frozen after freeze"),
                           ("criu_memdump_ms", "memdump"), ("criu_memwrite_ms", "memwrite"),
                           ("criu_restore_ms", "restore (internal)"), ("criu_forking_ms", "forking")):
                vals = [num(r.get(k)) for r in c if num(r.get(k)) is not None]
                if vals:
                    parts.append("%s %s ms" % (lab, fmt(statistics.median(vals), k)))
            if parts:
                w("CRIU's own stats (medians): " + ", ".join(parts) + ".")
                w("")
        floors = []
        for t in ["criu"] + others:
            r = results[(t,) + cfg]
            if not r:
                continue
            img = statistics.median([num(x.get("image_bytes")) for x in r])
            if tmpfs_m:
                floors.append("%s image %.0f MiB → %.0f ms at the tmpfs write rate" % (
                    TOOL_LABEL.get(t, t), img / 1048576.0, img / 1048576.0 / tmpfs_m * 1000))
        if memcpy_m:
            floors.append("copying %d MiB once at the memcpy rate: %.0f ms" % (mib, mib / memcpy_m * 1000))
        if floors:
            w("Machine floor (best rates of the run): " + "; ".join(floors) + ".")
            w("")
        for t in ["criu"] + others:
            fl = [f for f in fails if f.get("tool") == t
                  and (int(f.get("threads", 0)), int(f.get("mib", 0))) == cfg]
            if fl and not results[(t,) + cfg]:
                w("**%s: no successful run in this configuration.** First error (%s): `%s`" % (
                    TOOL_LABEL.get(t, t), fl[0].get("stage", "?"), fl[0].get("error", "?")))
                w("")
            elif fl:
                w("**%s: %d of %d runs failed** (not in the medians); first error (%s): `%s`" % (
                    TOOL_LABEL.get(t, t), len(fl), attempts[(t,) + cfg], fl[0].get("stage", "?"),
                    fl[0].get("error", "?")))
                w("")

    if not configs:
        w("No configuration ran.")
        w("")

    w("## Kernel engine")
    w("")
    if kernel is None:
        w("kernel engine: not probed (the guest script did not get that far).")
    elif kernel.get("available") == "yes":
        w("kernel engine: available (checkpoint with `--engine kernel`, restart with `--engine %s`); "
          "its columns are `%s` above." % (kernel.get("restart_engine", "?"),
                                             TOOL_LABEL["stasis-kernel"]))
        if kernel.get("note"):
            w("")
            w("Note: %s" % kernel["note"])
    else:
        w("kernel engine: not available (%s)" % kernel.get("reason", "no reason given"))
    w("")

    w("## Failures")
    w("")
    if fails:
        w("| tool | threads | MiB | rep | stage | error |")
        w("|---|---|---|---|---|---|")
        for f in fails:
            w("| %s | %s | %s | %s | %s | `%s` |" % (
                f.get("tool"), f.get("threads"), f.get("mib"), f.get("rep"), f.get("stage"),
                f.get("error", "").replace("|", "/").replace("`", "'")))
    else:
        w("None: every attempted run ended with verdict `ok`.")
    w("")
    if notes:
        w("Notes from the run:")
        w("")
        for n in notes:
            w("- %s: %s" % (n.get("tool", "?"), n.get("text", "")))
        w("")

    w("## How to read this")
    w("")
    w("- Each run: start `bench_workload --threads N --touch-mib M` (a session leader, stdio "
      "on tmpfs), wait for its ready file, checkpoint it **killing it** (`criu dump -t PID` kills "
      "by default; `stasis checkpoint PID -o IMG --kill --engine user|kernel`), reap it, restart it detached "
      "(`criu restore -d`, `stasis restart IMG --detach`), create the stop file and require "
      "the verdict `ok` (every word of the M MiB pattern, every thread's LCG state against "
      "its step count, TIDs, and every thread advancing after the restart). Images on the "
      "guest's tmpfs. The tools alternate run by run inside each configuration.")
    rel = sorted({r.get("release", "kill") for k, v in results.items() if k[0] != "criu" for r in v})
    if "stop" in rel:
        w("- stasis runs marked `release=stop` in the raw results used `stasis checkpoint --stop` "
          "followed by `kill -9` from the script, because `--kill` did not return (see the notes). "
          "The release comes after the frozen span; the checkpoint wall time then includes a "
          "detach instead of a kill.")
    w("- **checkpoint, wall**: wall time of the checkpoint command (process start to exit), "
      "bash `$EPOCHREALTIME` around it.")
    w("- **frozen**: CRIU: `freezing_time + frozen_time` from its own `stats-dump` "
      "(decoded by bench/criu_stats.py): from the start of freezing the tree until the "
      "dump is written and the tree killed. stasis: the `frozen Z ms` of its summary line, "
      "i.e. PTRACE_SEIZE of the first thread until the image is written, flushed, fsynced "
      "and renamed (the release, kill or detach, comes after); with the kernel engine, from the "
      "module starting to freeze the threads until the image is durable.")
    w("- **restart to running**: wall time of `criu restore -d` / `stasis restart --detach`; "
      "both return once the restored process runs.")
    w("- **image size**: `du -sb` of the CRIU images directory (logs excluded); the size of "
      "the stasis image file.")
    w("- The machine limits are indicative: under TCG the cost depends on the instruction mix "
      "(glibc's AVX2 memcpy, the kernel's `rep movsb` copies, page clearing), so a tool can "
      "beat a floor (CRIU's vmsplice/splice path writes pages faster than write() from user "
      "memory). Measured twice (start, end) to show how the host's load moved.")
    w("- QEMU TCG makes the guest about 18x slower than the host: compare ratios and the "
      "machine limits measured in the same guest, not absolute numbers.")
    w("")
    with open(a.out, "w") as f:
        f.write("\n".join(o))
    return 0


if __name__ == "__main__":
    sys.exit(main())
