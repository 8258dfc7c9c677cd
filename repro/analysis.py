"""Accuracy by gold position with uncertainty: every seed's scored predictions as (seed, question) x
position matrices, means with 95% percentile-bootstrap intervals (hierarchical over seeds, then questions,
when there are several seeds), and paired differences between models on the same questions."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np

from repro.config import ReproConfig

logger = logging.getLogger(__name__)

MIDDLE = (0.25, 0.75)  # gold positions counted as "the middle" (inclusive): where long-context models fail
_PROMPT_ID = re.compile(r"^qa-(?P<record>.+)-L(?P<length>\d+)-p(?P<position>[0-9.e-]+)$")


def load_rows(eval_dirs: dict[int, Path]) -> list[dict]:
    """Every scored prediction of every seed's evaluation, tagged with `seed` and (for qa) `record`."""
    rows = []
    for seed, folder in eval_dirs.items():
        with (Path(folder) / "predictions.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line) | {"seed": seed}
                m = _PROMPT_ID.match(row["prompt_id"]) if row["task"] == "qa" else None
                if m:
                    row["record"] = m["record"]
                rows.append(row)
    return rows


def score_matrix(rows: list[dict], model: str, length: int, positions: list[float], key: str = "score"):
    """(units, matrix): one row per (seed, question), one column per gold position, cells = `key` (0/1).
    Units are sorted, so matrices of different models line up for paired comparisons."""
    cells = {}
    for r in rows:
        if r["task"] == "qa" and r["model"] == model and r["length"] == length:
            cells[(r["seed"], r["record"], float(r["position"]))] = float(r.get(key, 0.0))
    units = sorted({(s, q) for s, q, _ in cells})
    matrix = np.array([[cells.get((s, q, p), np.nan) for p in positions] for s, q in units], dtype=float)
    return units, matrix


def bootstrap_interval(
    matrix: np.ndarray, columns: list[int], resamples: int, seed: int, clusters: list | None = None
) -> dict:
    """Mean of the `columns` of `matrix` (units x positions) with a 95% percentile-bootstrap interval:
    {"mean", "lo", "hi", "n"}. Resampling whole units keeps a question's positions together, so intervals
    of differences between positions/models are paired. With `clusters` (each unit's seed) naming more than
    one cluster, the bootstrap is hierarchical: seeds are drawn with replacement, then questions within each
    drawn seed, so the interval carries the spread between seeds as well as between questions."""
    per_unit = np.nanmean(matrix[:, columns], axis=1)
    rng = np.random.default_rng(seed)
    groups = sorted(set(clusters)) if clusters is not None else []
    if len(groups) < 2:
        idx = rng.integers(0, len(per_unit), size=(resamples, len(per_unit)))
        means = per_unit[idx].mean(axis=1)
    else:
        members = [np.flatnonzero(np.array([c == g for c in clusters])) for g in groups]
        means = np.empty(resamples)
        for r in range(resamples):
            drawn = rng.integers(0, len(groups), size=len(groups))
            picked = [rng.choice(members[g], size=len(members[g])) for g in drawn]
            means[r] = per_unit[np.concatenate(picked)].mean()
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(per_unit.mean()), "lo": float(lo), "hi": float(hi), "n": int(len(per_unit))}


def position_columns(positions: list[float]) -> dict[str, list[int]]:
    """Column groups of the report: each position, the middle ones, and all."""
    groups = {f"{p:g}": [i] for i, p in enumerate(positions)}
    groups["middle"] = [i for i, p in enumerate(positions) if MIDDLE[0] <= p <= MIDDLE[1]]
    groups["all"] = list(range(len(positions)))
    return {k: v for k, v in groups.items() if v}


def accuracy_table(rows: list[dict], models: list[str], length: int, positions: list[float], b: int) -> dict:
    """{model: {group: interval}} of exact match at `length` (see `bootstrap_interval`)."""
    table = {}
    for model in models:
        units, matrix = score_matrix(rows, model, length, positions)
        if len(matrix):
            seeds = [s for s, _ in units]
            groups = position_columns(positions)
            table[model] = {g: bootstrap_interval(matrix, cols, b, 0, seeds) for g, cols in groups.items()}
    return table


def difference_table(rows, a: str, b_model: str, length: int, positions: list[float], resamples: int) -> dict:
    """{group: interval} of accuracy(a) - accuracy(b_model) on the same questions (paired bootstrap)."""
    units_a, ma = score_matrix(rows, a, length, positions)
    units_b, mb = score_matrix(rows, b_model, length, positions)
    if units_a != units_b or not units_a:
        return {}
    seeds = [s for s, _ in units_a]
    return {
        g: bootstrap_interval(ma - mb, cols, resamples, 0, seeds)
        for g, cols in position_columns(positions).items()
    }


# The comparisons that carry the claim, in this order when both arms exist: quoting at all, then citing.
CLAIM_PAIRS = (("quote", "plain"), ("paraphrase", "plain"), ("paraphrase", "quote"))


def arm_pairs(arms: list[str]) -> list[tuple[str, str]]:
    """The paired differences between arms: `CLAIM_PAIRS` among those present, then every other pair of
    arms in their listed order (later minus earlier)."""
    pairs = [(a, b) for a, b in CLAIM_PAIRS if a in arms and b in arms]
    pairs += [
        (arms[j], arms[i])
        for i in range(len(arms))
        for j in range(i + 1, len(arms))
        if (arms[j], arms[i]) not in pairs and (arms[i], arms[j]) not in pairs
    ]
    return pairs


# Percentage points the middle must trail the edges by for a curve to count as lost-in-the-middle.
U_GAP = 10.0


def curve_shape(rows: list[dict], models: list[str], length: int, positions: list[float], b: int) -> dict:
    """{model: {"edges", "middle", "edges - middle", "loses_the_middle"}} at `length`: exact match at the
    first and last positions together, in the middle ones, and their paired difference (bootstrap over the
    same units). A model loses the middle when the difference is at least `U_GAP` points and the two
    intervals do not overlap (the middle's upper bound below the edges' lower bound)."""
    edges = [positions.index(min(positions)), positions.index(max(positions))]
    middle = position_columns(positions).get("middle", [])
    out = {}
    for model in models:
        units, matrix = score_matrix(rows, model, length, positions)
        if not len(matrix) or not middle or edges[0] == edges[1]:
            continue
        seeds = [s for s, _ in units]
        e = bootstrap_interval(matrix, edges, b, 0, seeds)
        m = bootstrap_interval(matrix, middle, b, 0, seeds)
        per_unit = np.nanmean(matrix[:, edges], axis=1) - np.nanmean(matrix[:, middle], axis=1)
        d = bootstrap_interval(per_unit[:, None], [0], b, 0, seeds)
        out[model] = {
            "edges": e,
            "middle": m,
            "edges - middle": d,
            "loses_the_middle": bool(100 * d["mean"] >= U_GAP and m["hi"] < e["lo"]),
        }
    return out


def rate_by_model(rows: list[dict], task: str, length: int, key: str) -> dict[str, float]:
    """Mean of `key` per model over the `task` rows at `length`."""
    sums: dict[str, list[float]] = {}
    for r in rows:
        if r["task"] == task and r["length"] == length and key in r:
            sums.setdefault(r["model"], []).append(float(r[key]))
    return {m: float(np.mean(v)) for m, v in sums.items()}


def analyse(cfg: ReproConfig, rows: list[dict]) -> dict:
    """Everything the report states: accuracy tables at each length, differences at the extended length,
    quote faithfulness and passkey per model."""
    positions = sorted({float(r["position"]) for r in rows if r["task"] == "qa"})
    lengths = sorted({int(r["length"]) for r in rows if r["task"] == "qa"})
    models = ["base", *cfg.repro.arms]
    long_len, resamples = max(lengths), cfg.repro.bootstrap
    out = {
        "positions": positions,
        "lengths": lengths,
        "long_length": long_len,
        "models": models,
        "accuracy": {str(n): accuracy_table(rows, models, n, positions, resamples) for n in lengths},
    }
    out["curve"] = {str(long_len): curve_shape(rows, models, long_len, positions, resamples)}
    pairs = [(arm, "base") for arm in cfg.repro.arms] + arm_pairs(list(cfg.repro.arms))
    out["differences"] = {
        f"{a} - {b}": difference_table(rows, a, b, long_len, positions, resamples) for a, b in pairs
    }
    out["quotes"] = {
        k: rate_by_model(rows, "qa", long_len, k) for k in ("quoted", "faithful_gold", "near_miss")
    }
    passkey_lengths = sorted({int(r["length"]) for r in rows if r["task"] == "passkey"})
    out["passkey"] = {str(n): rate_by_model(rows, "passkey", n, "score") for n in passkey_lengths}
    seeds = sorted({r["seed"] for r in rows})
    if len(seeds) > 1:
        out["by_seed"] = {
            str(seed): by_seed(cfg, [r for r in rows if r["seed"] == seed], models, long_len, positions)
            for seed in seeds
        }
    return out


def by_seed(
    cfg: ReproConfig, rows: list[dict], models: list[str], length: int, positions: list[float]
) -> dict:
    """One seed's figures at `length` (intervals over its questions alone): each model's edges / middle /
    all and whether it loses the middle, and the arms' paired differences (middle, all)."""
    b = cfg.repro.bootstrap
    acc = accuracy_table(rows, models, length, positions, b)
    curve = curve_shape(rows, models, length, positions, b)
    models_out = {
        m: {"all": acc[m]["all"]}
        | ({k: curve[m][k] for k in ("edges", "middle", "loses_the_middle")} if m in curve else {})
        for m in acc
    }
    diffs = {}
    for a, c in arm_pairs(list(cfg.repro.arms)):
        table = difference_table(rows, a, c, length, positions, b)
        if table:
            diffs[f"{a} - {c}"] = {g: table[g] for g in ("middle", "all") if g in table}
    return {"models": models_out, "differences": diffs}
