"""Selective prediction with PQA: rank images by Q, keep the most confident.

A model that can say "this prediction is probably wrong" is judged by how
much the error drops when the least confident images are set aside. With a
per-image risk ``r = 1 - Dice`` and the images ranked by their PQA score
``Q`` (most confident first), keeping the first ``k`` of ``n`` images gives
the point ``(coverage k / n, selective risk = mean r of those k)`` of the
risk–coverage curve (Geifman & El-Yaniv, 2017). Its area, averaged over
``k = 1..n``, is the AURC (Geifman et al., 2019): lower is better.

Two references put an AURC in context:

* **random** ranking: every subset of ``k`` images has, in expectation, the
  mean risk of all images, so the expected AURC of a random ranking is
  exactly ``mean(r)``. ``aurc < aurc_random`` means Q ranks better than chance.
* **oracle** ranking by the true risk (ascending): the lowest AURC any
  ranking can reach on these images.

Ties and non-finite scores:

* Images with equal Q are in no particular order, so the curve is the
  *expected* one over all orders of each tie group: inside a tie group the
  kept images contribute the group's mean risk each. A constant Q therefore
  gives exactly the random ranking's curve; the result never depends on the
  order the images came in.
* A NaN Q (a non-finite prediction, :func:`keras_sl.pqa.quality`) ranks
  **last**, as the least confident value, tied with any ``-inf``; such images
  are always flagged (:func:`is_flagged`).

Everything here is NumPy on host arrays; no backend is needed.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

#: Coverages at which :func:`selective_summary` reports the Dice of the kept images.
DEFAULT_COVERAGES = (0.8, 0.9)


def is_flagged(q, threshold: float):
    """True where an image's Q does **not** reach ``threshold`` (flag it as low quality).

    Written as ``not (q >= threshold)`` so that a NaN Q — a non-finite
    prediction — is always flagged, never passed. Works on a scalar (returns
    ``bool``) or an array (returns a bool array).

    Example:
    >>> is_flagged(0.9, 0.8), is_flagged(0.8, 0.8), is_flagged(float("nan"), 0.8)
    (False, False, True)
    """
    q_arr = np.asarray(q, dtype="float64")
    flagged = ~(q_arr >= float(threshold))  # NaN >= t is False, so NaN is flagged
    return bool(flagged) if flagged.ndim == 0 else flagged


def _as_scores_and_risks(q, risk) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(q, dtype="float64").reshape(-1)
    risk = np.asarray(risk, dtype="float64").reshape(-1)
    if q.shape != risk.shape:
        raise ValueError(f"q and risk must have one value per image, got {q.size} and {risk.size} values.")
    if q.size == 0:
        raise ValueError("Selective prediction needs at least one image, got none.")
    if not np.all(np.isfinite(risk)):
        raise ValueError("Every per-image risk (1 - Dice) must be finite; got NaN or Inf. Check the Dice values.")
    return q, risk


def _ranking_keys(q: np.ndarray) -> np.ndarray:
    """Sort keys, most confident first; NaN mapped to -inf (last, tied with -inf)."""
    return np.where(np.isnan(q), -np.inf, q)


@dataclasses.dataclass(frozen=True)
class RiskCoverage:
    """A risk–coverage curve: ``risk[k-1]`` is the mean risk of the ``k``
    most confident of ``n`` images, at ``coverage[k-1] = k / n``."""

    coverage: np.ndarray
    risk: np.ndarray

    @property
    def area(self) -> float:
        """AURC: the mean selective risk over ``k = 1..n``."""
        return float(np.mean(self.risk))

    def risk_at(self, coverage: float) -> float:
        """Selective risk when keeping the ``ceil(coverage * n)`` most confident
        images (at least the fraction ``coverage``, at least one image)."""
        return float(self.risk[_kept(coverage, self.risk.size) - 1])


def _kept(coverage: float, n: int) -> int:
    """How many of ``n`` images a ``coverage`` in (0, 1] keeps: ``ceil(c n)``,
    with a tolerance for float products such as ``0.9 * 120``."""
    if not 0.0 < float(coverage) <= 1.0:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}.")
    return max(1, min(n, math.ceil(float(coverage) * n - 1e-9)))


def risk_coverage(q, risk) -> RiskCoverage:
    """The risk–coverage curve of ranking images by ``q`` (highest first).

    Tie groups of equal ``q`` contribute their mean risk per kept image (the
    expectation over their orders); NaN ranks last. See the module docstring.

    Example (hand-computed: order 0.9, 0.7, 0.5 -> risks 0.1, 0.3, 0.6):
    >>> c = risk_coverage([0.9, 0.5, 0.7], [0.1, 0.6, 0.3])
    >>> c.coverage.round(3).tolist(), c.risk.round(4).tolist()
    ([0.333, 0.667, 1.0], [0.1, 0.2, 0.3333])
    """
    q, risk = _as_scores_and_risks(q, risk)
    keys = _ranking_keys(q)
    order = np.argsort(-keys, kind="stable")
    keys, sorted_risk = keys[order], risk[order]
    n = q.size
    # Tie groups over the sorted keys: [start, end) with equal keys.
    new_group = np.r_[True, keys[1:] != keys[:-1]]
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], n]
    before = np.r_[0.0, np.cumsum(sorted_risk)][starts]  # risk sum of all earlier groups
    group_mean = np.add.reduceat(sorted_risk, starts) / (ends - starts)
    k = np.arange(1, n + 1)
    expected_sum = before[group] + (k - starts[group]) * group_mean[group]
    return RiskCoverage(coverage=k / n, risk=expected_sum / k)


def oracle_curve(risk) -> RiskCoverage:
    """The curve of the ideal ranking: by true risk, lowest first."""
    risk = np.sort(np.asarray(risk, dtype="float64").reshape(-1))
    _as_scores_and_risks(risk, risk)
    k = np.arange(1, risk.size + 1)
    return RiskCoverage(coverage=k / risk.size, risk=np.cumsum(risk) / k)


def aurc(q, risk) -> float:
    """Area under the risk–coverage curve of ranking by ``q`` (lower is better).

    Example:
    >>> round(aurc([0.9, 0.5, 0.7], [0.1, 0.6, 0.3]), 4)   # (0.1 + 0.2 + 1/3) / 3
    0.2111
    """
    return risk_coverage(q, risk).area


def aurc_random(risk) -> float:
    """Expected AURC of a uniformly random ranking: exactly the mean risk.

    Example:
    >>> round(aurc_random([0.1, 0.6, 0.3]), 4)
    0.3333
    """
    _, risk = _as_scores_and_risks(np.zeros(np.size(risk)), risk)
    return float(np.mean(risk))


def aurc_oracle(risk) -> float:
    """AURC of the ranking by true risk: the lowest any ranking can reach."""
    return oracle_curve(risk).area


def selective_summary(q, dice, coverages: Sequence[float] = DEFAULT_COVERAGES) -> dict:
    """Risk–coverage figures of ranking images by Q, with risk = 1 − Dice.

    Returns ``{"aurc", "aurc_random", "aurc_oracle", "eaurc", "dice_at_coverage",
    "q_nonfinite"}``: ``eaurc = aurc - aurc_oracle`` (the excess over the
    ideal ranking); ``dice_at_coverage`` maps each coverage, written as
    ``"0.8"``, to the mean Dice of the ``ceil(c n)`` most confident images;
    ``q_nonfinite`` counts images whose Q is NaN (ranked last).

    Example:
    >>> s = selective_summary([0.9, 0.5, 0.7], [0.9, 0.4, 0.7])
    >>> round(s["aurc"], 4), round(s["aurc_random"], 4), s["dice_at_coverage"]["0.8"] == 1 - 1 / 3
    (0.2111, 0.3333, True)
    """
    dice = np.asarray(dice, dtype="float64").reshape(-1)
    q, risk = _as_scores_and_risks(q, 1.0 - dice)
    curve = risk_coverage(q, risk)
    oracle = oracle_curve(risk).area
    return {
        "aurc": curve.area,
        "aurc_random": aurc_random(risk),
        "aurc_oracle": oracle,
        "eaurc": curve.area - oracle,
        "dice_at_coverage": {f"{float(c):g}": 1.0 - curve.risk_at(c) for c in coverages},
        "q_nonfinite": int(np.sum(~np.isfinite(q))),
    }


def threshold_at_coverage(q, coverage: float) -> float:
    """The Q threshold that keeps (does not flag) at least ``coverage`` of the images.

    The images are ranked by Q (NaN last); the threshold is the Q of the
    ``ceil(coverage * n)``-th most confident one, so ``Q >= threshold`` keeps
    at least that many (more when others tie with it). If that image's Q is
    NaN (too many non-finite predictions to reach the coverage), the lowest
    finite Q is returned: every finite image is kept, every NaN flagged.

    Example:
    >>> threshold_at_coverage([0.2, 0.9, 0.5, 0.7, 0.8], 0.8)   # keep 4 of 5
    0.5
    """
    q = np.asarray(q, dtype="float64").reshape(-1)
    finite = q[np.isfinite(q)]
    if finite.size == 0:
        raise ValueError("Every Q is NaN or infinite: no threshold can keep a finite prediction.")
    ranked = np.sort(_ranking_keys(q))[::-1]
    value = ranked[_kept(coverage, q.size) - 1]
    return float(value) if np.isfinite(value) else float(finite.min())


def threshold_at_risk(q, risk, max_risk: float) -> float:
    """The lowest Q threshold whose kept images (``Q >= threshold``) have a
    mean risk of at most ``max_risk``: the largest coverage that meets the
    target risk on these images.

    Only observed finite Q values are candidates, and a threshold keeps whole
    tie groups. Raises ``ValueError`` when even the most confident group
    misses the target.

    Example:
    >>> threshold_at_risk([0.9, 0.5, 0.7], [0.1, 0.6, 0.3], max_risk=0.25)   # keeps 0.9 and 0.7
    0.7
    """
    q, risk = _as_scores_and_risks(q, risk)
    best = None
    for t in np.unique(q[np.isfinite(q)]):  # ascending: the first that meets the target keeps the most
        if float(np.mean(risk[q >= t])) <= max_risk:
            best = float(t)
            break
    if best is None:
        raise ValueError(
            f"No Q threshold keeps images with a mean risk of at most {max_risk} (mean risk of the most confident "
            "group is higher). Allow a higher risk, or choose the threshold by coverage."
        )
    return best
