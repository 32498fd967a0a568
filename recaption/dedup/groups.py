"""Groups from links: connected components (``components_of_edges``, arrays only; ``UnionFind``,
the plain reference the tests check it against)."""

from __future__ import annotations

import numpy as np


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)  # the root is always the earliest index

    def groups(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return out


def components_of_edges(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component labels (each the smallest vertex of its component) of ``n`` vertices
    joined by edges ``a[i] - b[i]``, with arrays only: hook each root under the smaller root at
    the other end of an edge, then jump pointers to the roots, until no edge joins two roots."""
    parent = np.arange(n, dtype=np.int64)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while len(a):
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(ra, rb)[differ], np.minimum(ra, rb)[differ])
        while True:
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
        a, b = a[differ], b[differ]
    return parent
