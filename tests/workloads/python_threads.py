#!/usr/bin/env python3
"""python_threads: the stasis workload protocol in Python (standard library).

Threads:
  - 4 hash-chain threads: h_{n+1} = sha256(h_n), recording (n, h_n) every
    64 steps and re-verifying the latest segment every 16 marks; at the end
    the whole chain is recomputed from the seed and every mark compared.
  - 1 sieve thread: cycles over 100 segments of 10000 integers, counting
    primes with a segmented sieve, storing each count and comparing it with
    the stored one on every later pass; the stored counts must add up to
    pi(10^4) = 1229, pi(10^5) = 9592 and pi(10^6) = 78498.

Usage: python_threads.py --verdict FILE [--ready FILE] [--stop FILE] [--damage-self]

There is no address to poke from outside (Python objects move and are
shared), so the ready line says damage=0x0 len=0, and --damage-self makes the
script corrupt one recorded hash itself right after writing the ready file.
"""
import argparse
import hashlib
import os
import sys
import threading
import time

MARK_EVERY = 64
SEG = 10000
NSEG = 100
KNOWN_PI = {1: 1229, 10: 9592, 100: 78498}  # segments -> pi(segments * SEG)

stop_event = threading.Event()


def atomic_write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class HashChain(threading.Thread):
    def __init__(self, idx):
        super().__init__(daemon=True)
        self.idx = idx
        self.seed = hashlib.sha256(b"stasis-chain-%d" % idx).digest()
        self.h = self.seed
        self.n = 0
        self.marks = []  # (n, digest)
        self.error = None

    def run(self):
        try:
            while not stop_event.is_set():
                for _ in range(32):
                    self.h = hashlib.sha256(self.h).digest()
                    self.n += 1
                    if self.n % MARK_EVERY == 0:
                        self.marks.append((self.n, self.h))
                        if len(self.marks) % 16 == 0 and not self.check_last():
                            return
                time.sleep(0.002)
        except Exception as e:  # noqa: BLE001 - report anything
            self.error = "chain %d: exception %r" % (self.idx, e)

    def check_last(self):
        m = self.marks
        if len(m) < 2:
            return True
        (n0, h0), (n1, h1) = m[-2], m[-1]
        h = h0
        for _ in range(n1 - n0):
            h = hashlib.sha256(h).digest()
        if h != h1 or n1 - n0 != MARK_EVERY:
            self.error = "chain %d: segment %d..%d does not recompute" % (self.idx, n0, n1)
            return False
        return True

    def final_check(self):
        if self.error:
            return self.error
        h = self.seed
        n = 0
        for mn, mh in self.marks:
            while n < mn:
                h = hashlib.sha256(h).digest()
                n += 1
            if h != mh:
                return "chain %d: mark at step %d does not match recomputation" % (self.idx, mn)
        while n < self.n:
            h = hashlib.sha256(h).digest()
            n += 1
        if h != self.h:
            return "chain %d: current hash at step %d does not match" % (self.idx, self.n)
        if len(self.marks) != self.n // MARK_EVERY:
            return "chain %d: %d marks for %d steps" % (self.idx, len(self.marks), self.n)
        return None


def base_primes(limit):
    s = bytearray([1]) * (limit + 1)
    s[0:2] = b"\x00\x00"
    for i in range(2, int(limit ** 0.5) + 1):
        if s[i]:
            s[i * i :: i] = bytearray(len(s[i * i :: i]))
    return [i for i in range(limit + 1) if s[i]]


class Sieve(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.primes = base_primes(1000)
        self.counts = [None] * NSEG
        self.passes = 0
        self.segments_done = 0
        self.error = None

    def segment(self, k):
        lo, hi = k * SEG, (k + 1) * SEG
        s = bytearray([1]) * SEG
        for p in self.primes:
            if p * p >= hi:
                break
            start = max(p * p, (lo + p - 1) // p * p)
            s[start - lo :: p] = bytearray(len(s[start - lo :: p]))
        if lo == 0:
            s[0] = s[1] = 0
        return sum(s)

    def run(self):
        try:
            k = 0
            while not stop_event.is_set():
                c = self.segment(k)
                if self.counts[k] is None:
                    self.counts[k] = c
                elif self.counts[k] != c:
                    self.error = "sieve: segment %d counted %d, earlier %d" % (k, c, self.counts[k])
                    return
                self.segments_done += 1
                k = (k + 1) % NSEG
                if k == 0:
                    self.passes += 1
                time.sleep(0.003)
        except Exception as e:  # noqa: BLE001
            self.error = "sieve: exception %r" % (e,)

    def final_check(self):
        if self.error:
            return self.error
        for nseg, pi in KNOWN_PI.items():
            part = self.counts[:nseg]
            if all(c is not None for c in part) and sum(part) != pi:
                return "sieve: pi(%d) came out as %d, expected %d" % (nseg * SEG, sum(part), pi)
        for k, c in enumerate(self.counts):
            if c is not None and c != self.segment(k):
                return "sieve: stored count of segment %d is wrong" % k
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verdict", required=True)
    ap.add_argument("--ready")
    ap.add_argument("--stop")
    ap.add_argument("--damage-self", action="store_true")
    a = ap.parse_args()
    ready = a.ready or a.verdict + ".ready"
    stop = a.stop or a.verdict + ".stop"

    chains = [HashChain(i) for i in range(4)]
    sieve = Sieve()
    workers = chains + [sieve]
    for t in workers:
        t.start()
    while not (all(c.marks for c in chains) and sieve.segments_done > 0):
        time.sleep(0.005)
    time.sleep(0.02)
    atomic_write(ready, "ready pid=%d damage=0x0 len=0\n" % os.getpid())
    if a.damage_self:
        n, h = chains[0].marks[0]
        chains[0].marks[0] = (n, bytes([h[0] ^ 0xFF]) + h[1:])

    while not os.path.exists(stop):
        time.sleep(0.01)
    stop_event.set()
    for t in workers:
        t.join(timeout=30)
    errors = []
    for t in workers:
        if t.is_alive():
            errors.append("%s did not stop" % t.name)
        else:
            e = t.final_check()
            if e:
                errors.append(e)
    if errors:
        msg = "FAIL: python_threads: " + errors[0]
        if len(errors) > 1:
            msg += " (+%d more)" % (len(errors) - 1)
    else:
        msg = "ok"
    atomic_write(a.verdict, msg + "\n")
    return 0 if msg == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
