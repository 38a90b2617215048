"""Selective prediction with PQA (keras_sl.selective): risk–coverage, AURC,
flagging, thresholds — hand-computed small cases, properties, and the
recipes/pqa_threshold.py recipe on a tiny preset."""

import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_sl import selective
from harness import tiny_sl_preset


NAN = float("nan")


# -- flagging ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("q, threshold, flagged", [
    (0.9, 0.8, False), (0.8, 0.8, False), (0.79, 0.8, True),
    (NAN, 0.8, True), (NAN, -1.0, True), (NAN, float("-inf"), True),  # NaN never passes any threshold
    (float("inf"), 0.8, False), (0.0, 0.0, False),
])
def test_is_flagged_never_passes_nan(q, threshold, flagged):
    assert selective.is_flagged(q, threshold) is flagged


def test_is_flagged_on_arrays():
    assert selective.is_flagged(np.array([0.9, NAN, 0.1]), 0.5).tolist() == [False, True, True]


# -- hand-computed curves ----------------------------------------------------------------------------------------
def test_curve_of_a_perfect_ranking_equals_the_oracle():
    # order by Q: 0.9 (risk .1), 0.7 (.3), 0.5 (.6) -> selective risks .1, .2, 1/3
    q, risk = [0.9, 0.5, 0.7], [0.1, 0.6, 0.3]
    curve = selective.risk_coverage(q, risk)
    np.testing.assert_allclose(curve.risk, [0.1, 0.2, 1 / 3])
    np.testing.assert_allclose(curve.coverage, [1 / 3, 2 / 3, 1.0])
    assert selective.aurc(q, risk) == pytest.approx((0.1 + 0.2 + 1 / 3) / 3)
    assert selective.aurc_oracle(risk) == pytest.approx(selective.aurc(q, risk))
    assert selective.aurc_random(risk) == pytest.approx(1 / 3)


def test_curve_of_the_worst_ranking():
    q, risk = [0.1, 0.9, 0.5], [0.1, 0.6, 0.3]  # most confident = riskiest: .6, .45, 1/3
    assert selective.aurc(q, risk) == pytest.approx((0.6 + 0.45 + 1 / 3) / 3)
    assert selective.aurc(q, risk) > selective.aurc_random(risk)


def test_ties_give_the_expected_curve_over_their_orders():
    # One tie group of all images: every k keeps the mean risk -> exactly the random ranking.
    assert selective.aurc([0.5, 0.5], [0.0, 1.0]) == pytest.approx(0.5)
    # Q = .9 (risk 0), then a tie {.4: risks .2 and .6}: k=2 -> (0 + .4)/2, k=3 -> .8/3.
    curve = selective.risk_coverage([0.4, 0.9, 0.4], [0.2, 0.0, 0.6])
    np.testing.assert_allclose(curve.risk, [0.0, 0.2, 0.8 / 3])
    # the input order of tied images does not matter
    np.testing.assert_allclose(selective.risk_coverage([0.4, 0.4, 0.9], [0.6, 0.2, 0.0]).risk, curve.risk)


def test_nan_q_ranks_last():
    curve = selective.risk_coverage([NAN, 0.2, 0.8], [0.9, 0.5, 0.1])  # order .8, .2, NaN
    np.testing.assert_allclose(curve.risk, [0.1, 0.3, 0.5])
    # NaN ties with -inf: both last, averaged
    curve = selective.risk_coverage([NAN, float("-inf"), 0.5], [1.0, 0.0, 0.2])
    np.testing.assert_allclose(curve.risk, [0.2, (0.2 + 0.5) / 2, 1.2 / 3])


def test_summary_keys_and_dice_at_coverage():
    q = np.linspace(1.0, 0.1, 10)  # already ranked
    dice = np.array([1.0, 0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.2, 0.1])
    s = selective.selective_summary(q, dice)
    assert set(s) >= {"aurc", "aurc_random", "aurc_oracle", "dice_at_coverage"}
    assert list(s["dice_at_coverage"]) == ["0.8", "0.9"]
    assert s["dice_at_coverage"]["0.8"] == pytest.approx(dice[:8].mean())
    assert s["dice_at_coverage"]["0.9"] == pytest.approx(dice[:9].mean())
    assert s["aurc_random"] == pytest.approx(1 - dice.mean())
    assert s["aurc_oracle"] <= s["aurc"] < s["aurc_random"]
    assert s["q_nonfinite"] == 0
    json.dumps(s, allow_nan=False)  # plain floats and str keys


def test_coverage_rounds_up_and_tolerates_float_products():
    curve = selective.risk_coverage(np.arange(120.0)[::-1], np.arange(120.0) / 120)
    assert curve.risk_at(0.9) == pytest.approx(np.mean(np.arange(108) / 120))  # 0.9 * 120 = 108.00000000000001
    assert curve.risk_at(0.8) == pytest.approx(np.mean(np.arange(96) / 120))
    assert selective.risk_coverage([0.5, 0.4, 0.3], [0.0, 0.5, 1.0]).risk_at(0.8) == pytest.approx(0.5)  # ceil(2.4)
    with pytest.raises(ValueError, match="coverage"):
        curve.risk_at(0.0)


@pytest.mark.parametrize("q, risk, match", [
    ([0.5, 0.4], [0.1], "one value per image"),
    ([], [], "at least one image"),
    ([0.5, 0.4], [0.1, NAN], "finite"),
])
def test_bad_inputs_are_refused(q, risk, match):
    with pytest.raises(ValueError, match=match):
        selective.aurc(q, risk)


# -- thresholds ----------------------------------------------------------------------------------------------------
def test_threshold_at_coverage():
    q = [0.2, 0.9, 0.5, 0.7, 0.8]
    assert selective.threshold_at_coverage(q, 0.8) == 0.5  # keeps 4 of 5
    assert selective.threshold_at_coverage(q, 1.0) == 0.2
    assert selective.threshold_at_coverage(q, 0.1) == 0.9
    # too many NaN to reach the coverage: keep every finite image
    assert selective.threshold_at_coverage([NAN, NAN, 0.3, 0.6], 0.9) == 0.3
    with pytest.raises(ValueError, match="NaN"):
        selective.threshold_at_coverage([NAN, NAN], 0.5)


def test_threshold_at_risk():
    q, risk = [0.9, 0.5, 0.7], [0.1, 0.6, 0.3]
    assert selective.threshold_at_risk(q, risk, 0.25) == 0.7
    assert selective.threshold_at_risk(q, risk, 0.5) == 0.5  # everything meets it
    assert selective.threshold_at_risk(q, risk, 0.1) == 0.9
    with pytest.raises(ValueError, match="risk"):
        selective.threshold_at_risk(q, risk, 0.05)


# -- properties (hypothesis) ---------------------------------------------------------------------------------------
def test_properties():
    hypothesis = pytest.importorskip("hypothesis", reason="property tests need hypothesis (pip install hypothesis)")
    st = hypothesis.strategies
    scores = st.lists(st.tuples(st.one_of(st.floats(0, 1), st.just(NAN), st.sampled_from([0.25, 0.5])),
                                st.floats(0, 1)), min_size=1, max_size=30)

    @hypothesis.settings(max_examples=150, deadline=None)
    @hypothesis.given(scores, st.randoms(use_true_random=False))
    def check(pairs, rnd):
        q = np.array([p[0] for p in pairs])
        risk = np.array([p[1] for p in pairs])
        curve = selective.risk_coverage(q, risk)
        assert curve.risk[-1] == pytest.approx(risk.mean())  # full coverage = all images
        assert selective.aurc_oracle(risk) <= curve.area + 1e-12  # nothing beats the oracle
        perm = list(range(q.size))
        rnd.shuffle(perm)  # the input order never matters (ties are averaged)
        np.testing.assert_allclose(selective.risk_coverage(q[perm], risk[perm]).risk, curve.risk, atol=1e-12)
        constant = selective.aurc(np.full(q.size, 0.3), risk)  # no information -> the random ranking
        assert constant == pytest.approx(selective.aurc_random(risk))
        needed = math.ceil(0.8 * q.size - 1e-9)
        if np.isfinite(q).sum() >= needed:  # the coverage threshold keeps at least 80 %
            t = selective.threshold_at_coverage(q, 0.8)
            assert (~selective.is_flagged(q, t)).sum() >= needed

    check()


# -- the threshold recipe ------------------------------------------------------------------------------------------
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "pqa_threshold.py"


def _run_recipe(*argv):
    old = sys.argv
    sys.argv = [str(RECIPE), *argv]
    try:
        return runpy.run_path(str(RECIPE), run_name="__main__")
    except SystemExit as done:
        return done.code
    finally:
        sys.argv = old


def _tiny_kvasir(root: Path, n: int) -> Path:
    from PIL import Image

    from keras_sl.data import make_cells

    x, y = make_cells(n, size=32, seed=5)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray((x[i] * 255).astype("uint8")).save(root / "images" / f"id{i:02d}.png")
        Image.fromarray((y[i, ..., 0] * 255).astype("uint8")).save(root / "masks" / f"id{i:02d}.png")
    return root


def test_validation_part_is_deterministic_and_inside_the_training_split(tmp_path):
    recipe = runpy.run_path(str(RECIPE))
    ids = [f"id{i:03d}" for i in range(50)]
    val = recipe["validation_ids"](ids, fraction=0.2)
    assert val == recipe["validation_ids"](list(reversed(ids)), fraction=0.2)  # order-free
    assert len(val) == 10 and set(val) <= set(ids) and val == sorted(val)
    with pytest.raises(ValueError, match="fraction"):
        recipe["validation_ids"](ids, fraction=0.0)


def test_recipe_writes_q_threshold_into_a_metadata_copy(tmp_path, capsys):
    preset = tiny_sl_preset(tmp_path / "preset")
    original = (preset / "metadata.json").read_text()
    data = _tiny_kvasir(tmp_path / "kvasir", n=16)
    out = tmp_path / "meta" / "metadata.json"
    assert _run_recipe("--preset", str(preset), "--data", str(data), "--fraction", "0.3",
                       "--metadata-out", str(out)) == 0
    meta = json.loads(out.read_text())
    assert (preset / "metadata.json").read_text() == original  # the preset itself is untouched
    t = meta["q_threshold"]
    how = meta["q_threshold_selection"]
    assert 0.0 <= t <= 1.0 and how["rule"] == "coverage" and how["target_coverage"] == 0.9
    assert how["validation_images"] == 4 and how["test_split_used"] is False
    assert how["validation_kept"] >= math.ceil(0.9 * 4)
    assert f"{t:.4f}" in capsys.readouterr().out
