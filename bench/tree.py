"""The benchmark tree of bench/files and bench/objects: FILES small files in nested
folders (about two thirds of MIB) and 64 MiB files for the rest, random content, the
same names and sizes for the same arguments.

Usage: python3 bench/tree.py DIR FILES MIB
"""
import os, random, sys
src, files, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(18)
total = mib << 20
small_total = total * 2 // 3
avg = max(1, small_total // max(files, 1))
for i in range(files):
    d = os.path.join(src, f"d{i % 97:02}", f"s{i % 13:02}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06}.bin"), "wb") as f:
        f.write(os.urandom(rnd.randint(0, 2 * avg)))
left = total - small_total
n = 0
while left > 0:
    size = min(left, 64 << 20)
    os.makedirs(os.path.join(src, "big"), exist_ok=True)
    with open(os.path.join(src, "big", f"b{n}.bin"), "wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    left -= size
    n += 1
