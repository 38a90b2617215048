"""Deterministic train/test splits, identical on every machine and backend."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def deterministic_split(ids: Sequence[str], n_test: int, seed: int = 2025) -> tuple[list[str], list[str]]:
    """Split ``ids`` into (train, test) with ``n_test`` test ids.

    The ids are sorted, permuted by NumPy's PCG64 generator seeded with
    ``seed`` (bit-identical across platforms and NumPy versions >= 1.17), and
    the first ``n_test`` of the permutation form the test set. Both lists are
    returned sorted.

    Example:
    >>> deterministic_split(["c", "a", "b", "d"], 1, seed=0)
    (['a', 'b', 'd'], ['c'])
    """
    ordered = sorted(ids)
    if len(set(ordered)) != len(ordered):
        raise ValueError("Sample ids must be unique to split deterministically.")
    if not 0 < n_test < len(ordered):
        raise ValueError(f"n_test must be between 1 and {len(ordered) - 1}, got {n_test}.")
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(len(ordered))
    test = sorted(ordered[i] for i in perm[:n_test])
    test_set = set(test)
    return [i for i in ordered if i not in test_set], test
