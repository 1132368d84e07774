#!/usr/bin/env python3
"""FINDINGS #5: on an llmfs mount (python3 scripts/bench-unlink.py MOUNTPOINT), creates/s
on a fresh store, after writing 1 GiB, right after unlinking it, and 10 s later."""
import os, sys, time
d = sys.argv[1]
def creates(tag, n=2000):
    t = time.time()
    for i in range(n):
        with open(f"{d}/small/{tag}-{i}", "wb") as f: f.write(b"x" * 100)
    return n / (time.time() - t)
os.makedirs(f"{d}/small", exist_ok=True)
print("creates on a fresh store: %.0f/s" % creates("a"))
buf = os.urandom(1 << 20)
with open(f"{d}/big", "wb") as f:
    for i in range(1024): f.write(buf[:-8] + i.to_bytes(8, "little"))
    os.fsync(f.fileno())
print("creates after writing 1 GiB: %.0f/s" % creates("b"))
t = time.time(); os.unlink(f"{d}/big"); print("unlink of 1 GiB: %.2f s" % (time.time() - t))
print("creates right after: %.0f/s" % creates("c"))
time.sleep(10)
print("creates 10 s later: %.0f/s" % creates("d"))
