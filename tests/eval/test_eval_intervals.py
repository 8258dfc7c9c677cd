"""Intervals on every accuracy: Wilson per grid cell, a question-clustered bootstrap for pooled rates and
paired differences."""

from __future__ import annotations

import math

import pytest

from longctx_core.eval.intervals import cluster_bootstrap, fmt, wilson


@pytest.mark.parametrize(
    "correct, n, lo, hi",
    [
        (3, 6, 0.18761, 0.81239),  # hand-computed from the Wilson formula, z = 1.96
        (0, 6, 0.0, 0.39034),  # all wrong: a real upper bound, not the normal approximation's [0, 0]
        (6, 6, 0.60966, 1.0),
        (45, 100, 0.35615, 0.54755),
    ],
)
def test_wilson_matches_the_formula(correct, n, lo, hi):
    ci = wilson(correct, n)
    assert ci["mean"] == pytest.approx(correct / n)
    assert (ci["lo"], ci["hi"]) == (pytest.approx(lo, abs=1e-4), pytest.approx(hi, abs=1e-4))
    assert ci["n"] == n


def test_wilson_of_nothing_is_nan():
    assert math.isnan(wilson(0, 0)["mean"])


def test_cluster_bootstrap_resamples_whole_questions():
    """Three positions per question, answered alike within a question: the clustered interval must be as
    wide as a 10-question sample's, not a 30-independent-answers one's."""
    values, clusters = [], []
    for q in range(10):
        values += [float(q % 2)] * 3
        clusters += [q] * 3
    clustered = cluster_bootstrap(values, clusters, seed=1)
    naive = cluster_bootstrap(values, list(range(len(values))), seed=1)
    assert clustered["mean"] == naive["mean"] == 0.5
    assert clustered["n"] == 10 and naive["n"] == 30
    assert clustered["lo"] <= 0.5 <= clustered["hi"]
    # sd of a mean of 10 coin flips ~0.158 vs 30 flips ~0.091: the clustered interval is ~1.7x wider
    assert (clustered["hi"] - clustered["lo"]) > 1.4 * (naive["hi"] - naive["lo"])
    assert cluster_bootstrap(values, clusters, seed=1) == clustered  # seeded: reproducible


def test_cluster_bootstrap_of_a_constant_and_of_one_cluster():
    ci = cluster_bootstrap([1.0, 1.0, 1.0, 1.0], ["a", "a", "b", "b"])
    assert (ci["mean"], ci["lo"], ci["hi"]) == (1.0, 1.0, 1.0)
    one = cluster_bootstrap([0.0, 1.0], ["a", "a"])
    assert one["mean"] == 0.5 and math.isnan(one["lo"]) and one["n"] == 1


def test_fmt_prints_points():
    assert fmt({"mean": 0.5, "lo": 0.1876, "hi": 0.8124}) == "50.0 [18.8, 81.2]"
    assert fmt({"mean": 0.5, "lo": math.nan, "hi": math.nan}) == "50.0 [?, ?]"
