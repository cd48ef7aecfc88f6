#!/usr/bin/env python3
"""An independent implementation of ringway's ring scheme, used to record golden vectors.

Scheme (the reference HashRing's): h(s) = int(md5(s).hexdigest(), 16) % 2**32; an
upstream `id` with weight w owns h(f"{i}:{id}") for i in range(vnodes * w), registered
in pool order into a dict (so a later upstream overwrites an equal point); a key maps to
the owner of the first point >= h(key), wrapping to the first point.

Usage: python3 tests/golden/ring_reference.py > tests/golden/ring_v1.tsv
Each output line: case<TAB>key<TAB>upstream id.
"""
import bisect
import hashlib


def h(s: str) -> int:
    return int(hashlib.md5(s.encode()).hexdigest(), 16) % 2**32


class HashRing:
    def __init__(self, vnodes=150):
        self.vnodes = vnodes
        self.ring = {}

    def register(self, server_id, weight=1):
        for i in range(self.vnodes * weight):
            self.ring[h(f"{i}:{server_id}")] = server_id

    def locate_server(self, key):
        points = sorted(self.ring)
        i = bisect.bisect_left(points, h(key))
        return self.ring[points[i % len(points)]]


CASES = {
    # name: (vnodes, [(id, weight), ...])
    "three-default": (150, [("127.0.0.1:9001", 1), ("127.0.0.1:9002", 1), ("127.0.0.1:9003", 1)]),
    "example-weighted": (150, [("127.0.0.1:9001", 1), ("127.0.0.1:9002", 2), ("cache-3", 1)]),
    "ten-vnodes40": (40, [(f"shard-{n}", 1 + n % 3) for n in range(10)]),
    "one": (150, [("solo", 1)]),
}


def keys():
    out = [f"/item/{n}" for n in range(200)]
    out += ["", "/", "a", "user:42", "/cart?id=7", "tenant-acme//a", "\u00e9t\u00e9"]
    return out


def main():
    for name, (vnodes, members) in CASES.items():
        ring = HashRing(vnodes)
        for server_id, weight in members:
            ring.register(server_id, weight)
        for key in keys():
            print(f"{name}\t{key}\t{ring.locate_server(key)}")


if __name__ == "__main__":
    main()
