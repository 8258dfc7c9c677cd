"""`make repro`: the method's finding at toy scale — does paraphrase-the-original-text training fix "lost in
the middle" after a RoPE extension? — with uncertainty.

    summary = run_repro(cfg, {"synthesize": synthesize.run, "train": train.run, "evaluate": evaluate.run})

The stages are the project's own (`ray_jobs.<stage>.run`), given per-arm copies of the config; this module
only decides the copies, checks that the evaluation questions stayed held out, and writes the report:

    <run>/                                   (run.storage_path/run.name)
      base -> toy base folder (cached under LONGCTX_CACHE_DIR, see longctx_core.toybase)
      arms/toybase-<hash>/<arm>-s<seed>/    synthesize + train of one QLoRA arm (a normal run folder)
      arms/toybase-<hash>/eval-s<seed>/eval/  one evaluation of base (YaRN x4) + every arm, same prompts
      report.md, repro.json, plots/*.png     the comparison, 95% bootstrap intervals over questions

Arms of one seed share `run.seed`, records, targets and steps (`data_gen` draws the answer style from its own
random stream, so the plain twin has the same contexts and questions). The base model is the toy base with
`model.rope` applied (YaRN x `repro.length_factor`) and no adapter.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from longctx_core.config import Config, ConfigError, config_from_dict, run_dir

logger = logging.getLogger(__name__)

Stage = Callable[[Config], dict]
MIDDLE = (0.25, 0.75)  # gold positions counted as "the middle" (inclusive): where long-context models fail
_PROMPT_ID = re.compile(r"^qa-(?P<record>.+)-L(?P<length>\d+)-p(?P<position>[0-9.e-]+)$")


# ---- configuration ------------------------------------------------------------------------------------------


def check_repro_config(cfg: Config) -> None:
    """Contradictions between `repro` and the other sections, as one-line ConfigErrors naming the key;
    cheap (no model, no Ray), so a bad preset fails in a second."""
    from longctx_core.toybase import world_records

    b, factor = cfg.repro.base, cfg.repro.length_factor
    rope = cfg.model.rope
    if cfg.data.source.kind != "builtin":
        raise ConfigError("data.source.kind: the repro's toy world is 'builtin'")
    if rope.type == "none" or rope.original_max_position_embeddings != b.context:
        raise ConfigError(
            f"model.rope.original_max_position_embeddings: must equal repro.base.context ({b.context}) with a "
            "scaling type set (the base is trained at L0 and extended from there)"
        )
    if (rope.factor or 0) != factor and rope.target_max_position_embeddings != factor * b.context:
        raise ConfigError(f"model.rope.factor: must be repro.length_factor ({factor})")
    if cfg.data.target_bounds()[1] > factor * b.context:
        raise ConfigError(f"data.target_tokens: longer than repro.length_factor x L0 = {factor * b.context}")
    if float(factor) not in [float(f) for f in cfg.eval.length_factors]:
        raise ConfigError(f"eval.length_factors: must include repro.length_factor ({factor})")
    qa = cfg.eval.qa
    for seed in cfg.repro.seeds:
        held = _held_out_count(world_records(cfg, seed, qa.pool_records), cfg.data.eval_fraction, seed)
        if held < qa.num_questions:
            raise ConfigError(
                f"eval.qa.num_questions: {qa.num_questions} asked, the world of seed {seed} holds out {held} "
                "(raise data.eval_fraction or data.source.builtin.num_records)"
            )


def _held_out_count(records, eval_fraction: float, seed: int) -> int:
    from data_gen.split import split_of

    return sum(split_of(r.id, eval_fraction, seed) == "eval" for r in records)


def derive(cfg: Config, edits: dict[str, object]) -> Config:
    """A validated copy of `cfg` with dotted-key `edits` (values may be lists/dicts, set as they are)."""
    tree = cfg.model_dump(mode="json")
    for dotted, value in edits.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return config_from_dict(tree)


def arms_root(cfg: Config, base_dir: Path) -> Path:
    """Where the arms of a toy base live: <run>/arms/<base folder name>/ (the name carries the base's recipe
    hash, so a rebuilt base never resumes from, or reuses data of, another base's arms)."""
    return run_dir(cfg) / "arms" / Path(base_dir).name


def arm_config(cfg: Config, base_dir: Path, arm: str, seed: int) -> Config:
    """The config of one QLoRA arm: its own run folder, the arm's answer-style mix, `run.seed` = seed, the
    toy base as the checkpoint; everything else (steps, samples, lengths) as in the preset."""
    return derive(
        cfg,
        {
            "run.storage_path": str(arms_root(cfg, base_dir)),
            "run.name": f"{arm}-s{seed}",
            "run.seed": seed,
            "model.name_or_path": str(base_dir),
            "data.answer_styles": dict(cfg.repro.arms[arm]),
        },
    )


def eval_config(cfg: Config, base_dir: Path, seed: int, adapters: dict[str, Path]) -> Config:
    """The config of the seed's evaluation: the extended base and every arm's adapter on the same prompts."""
    models = [{"name": "base", "kind": "base", "path": None}]
    models += [{"name": arm, "kind": "adapter", "path": str(path)} for arm, path in adapters.items()]
    return derive(
        cfg,
        {
            "run.storage_path": str(arms_root(cfg, base_dir)),
            "run.name": f"eval-s{seed}",
            "run.seed": seed,
            "model.name_or_path": str(base_dir),
            "eval.models": models,
        },
    )


# ---- held-out check -----------------------------------------------------------------------------------------


def check_held_out(cfg: Config, seed: int, arm_roots: list[Path]) -> int:
    """Raise LongctxError when a question the evaluation of `seed` asks appears in any training stage: the
    toy base's training questions exclude them by construction (`toybase.heldout_questions`, checked here
    again) and every arm's `data/train` Parquet is read. Returns the number of questions checked."""
    from longctx_core.errors import LongctxError
    from longctx_core.eval.contexts import check_no_leak, held_out_records, question_key, training_questions
    from longctx_core.toybase import heldout_questions

    qa = cfg.eval.qa
    records, _, _ = held_out_records(
        cfg.data.source, seed, cfg.data.eval_fraction, qa.num_questions, qa.pool_records
    )
    missing = [r.question for r in records if question_key(r.question) not in heldout_questions(cfg)]
    if missing:
        raise LongctxError(
            f"repro: evaluation question {missing[0]!r} is not excluded from the toy base's data"
        )
    for root in arm_roots:
        found = training_questions(root)
        if found is None:
            raise LongctxError(f"repro: {root}/data/train holds no training data to check")
        check_no_leak(records, found, str(root / "data" / "train"))
    return len(records)


# ---- running the arms ---------------------------------------------------------------------------------------


def _run_once(stage: str, fn: Stage, cfg: Config) -> dict:
    """Run `stage` of `cfg`'s run folder unless it already finished with the same config (resume)."""
    from longctx_core.pipeline import mark_stage_done, stage_is_done, stage_summary

    root = run_dir(cfg)
    if not cfg.run.force and root.is_dir() and stage_is_done(cfg, root, stage):
        logger.info("repro: %s of %s is done already, reusing it", stage, cfg.run.name)
        return stage_summary(root, stage)
    started = time.monotonic()
    logger.info("repro: === %s %s ===", stage, cfg.run.name)
    summary = fn(cfg) or {}
    mark_stage_done(cfg, root, stage, summary)
    logger.info("repro: %s %s took %.1f min", stage, cfg.run.name, (time.monotonic() - started) / 60)
    return summary


def run_seed(cfg: Config, base_dir: Path, seed: int, stages: dict[str, Stage]) -> Path:
    """Synthesize + train every arm of `seed`, check the held-out questions, evaluate base + arms together;
    returns the seed's evaluation folder."""
    adapters, roots = {}, []
    for arm in cfg.repro.arms:
        acfg = arm_config(cfg, base_dir, arm, seed)
        _run_once("synthesize", stages["synthesize"], acfg)
        _run_once("train", stages["train"], acfg)
        roots.append(run_dir(acfg))
        adapters[arm] = run_dir(acfg) / "train" / "adapter"
    ecfg = eval_config(cfg, base_dir, seed, adapters)
    n = check_held_out(ecfg, seed, roots)
    logger.info("repro: %d evaluation questions of seed %d are absent from every training stage", n, seed)
    _run_once("evaluate", stages["evaluate"], ecfg)
    return run_dir(ecfg) / "eval"


def check_base_quality(cfg: Config, base: dict) -> None:
    """Raise LongctxError when the toy base missed its validation target (unless `repro.allow_weak_base`)."""
    from longctx_core.errors import LongctxError

    target = cfg.repro.base.target_accuracy
    if base["validation_accuracy"] < target and not cfg.repro.allow_weak_base:
        raise LongctxError(
            f"repro.base: the toy base reached {100 * base['validation_accuracy']:.1f}% validation exact match "
            f"after {base['steps']} steps ({base['minutes']:.0f} min), below the {100 * target:.0f}% target; run "
            "make repro-base again to train it on from its checkpoint (repro.base.time_budget_min more minutes), "
            "or set repro.allow_weak_base=true"
        )


def run_repro(cfg: Config, stages: dict[str, Stage]) -> dict:
    """The whole reproduction (or only the toy base with `repro.only_base`); returns the summary."""
    from longctx_core.runs import prepare_run_dir
    from longctx_core.toybase import base_diagnosis, ensure_toy_base, read_base_info

    check_repro_config(cfg)
    prepare_run_dir(cfg, "repro")
    started = time.monotonic()
    # A below-target base trains on (from its checkpoint) unless the user takes it as it is.
    base_dir = ensure_toy_base(cfg, resume=cfg.repro.only_base or not cfg.repro.allow_weak_base)
    info = read_base_info(base_dir)
    info["diagnosis"] = base_diagnosis(cfg, base_dir)
    summary: dict = {"base_dir": str(base_dir), "base": info["summary"], "diagnosis": info["diagnosis"]}
    if cfg.repro.only_base:
        return summary
    check_base_quality(cfg, info["summary"])
    eval_dirs = {seed: run_seed(cfg, base_dir, seed, stages) for seed in cfg.repro.seeds}
    report = write_report(cfg, eval_dirs, info)
    summary |= {"report": str(report), "minutes": round((time.monotonic() - started) / 60, 2)}
    return summary


# ---- analysis: accuracy by position with bootstrap intervals -------------------------------------------------


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


def bootstrap_interval(matrix: np.ndarray, columns: list[int], resamples: int, seed: int) -> dict:
    """Mean of the `columns` of `matrix` (units x positions) with a 95% percentile-bootstrap interval over
    units (questions): {"mean", "lo", "hi", "n"}. Resampling whole units keeps a question's positions
    together, so intervals of differences between positions/models are paired."""
    per_unit = np.nanmean(matrix[:, columns], axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_unit), size=(resamples, len(per_unit)))
    means = per_unit[idx].mean(axis=1)
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
        _, matrix = score_matrix(rows, model, length, positions)
        if len(matrix):
            groups = position_columns(positions)
            table[model] = {g: bootstrap_interval(matrix, cols, b, 0) for g, cols in groups.items()}
    return table


def difference_table(rows, a: str, b_model: str, length: int, positions: list[float], resamples: int) -> dict:
    """{group: interval} of accuracy(a) - accuracy(b_model) on the same questions (paired bootstrap)."""
    units_a, ma = score_matrix(rows, a, length, positions)
    units_b, mb = score_matrix(rows, b_model, length, positions)
    if units_a != units_b or not units_a:
        return {}
    return {
        g: bootstrap_interval(ma - mb, cols, resamples, 0) for g, cols in position_columns(positions).items()
    }


def rate_by_model(rows: list[dict], task: str, length: int, key: str) -> dict[str, float]:
    """Mean of `key` per model over the `task` rows at `length`."""
    sums: dict[str, list[float]] = {}
    for r in rows:
        if r["task"] == task and r["length"] == length and key in r:
            sums.setdefault(r["model"], []).append(float(r[key]))
    return {m: float(np.mean(v)) for m, v in sums.items()}


def analyse(cfg: Config, rows: list[dict]) -> dict:
    """Everything the report states: accuracy tables at each length, differences at the extended length,
    quote faithfulness and passkey per model."""
    positions = sorted({float(r["position"]) for r in rows if r["task"] == "qa"})
    lengths = sorted({int(r["length"]) for r in rows if r["task"] == "qa"})
    models = ["base", *cfg.repro.arms]
    long_len, resamples = max(lengths), cfg.repro.bootstrap
    out = {"positions": positions, "lengths": lengths, "long_length": long_len, "models": models,
           "accuracy": {str(n): accuracy_table(rows, models, n, positions, resamples) for n in lengths}}  # fmt: skip
    pairs = [(arm, "base") for arm in cfg.repro.arms]
    if "paraphrase" in cfg.repro.arms and "plain" in cfg.repro.arms:
        pairs.append(("paraphrase", "plain"))
    out["differences"] = {
        f"{a} - {b}": difference_table(rows, a, b, long_len, positions, resamples) for a, b in pairs
    }
    out["quotes"] = {
        k: rate_by_model(rows, "qa", long_len, k) for k in ("quoted", "faithful_gold", "near_miss")
    }
    passkey_lengths = sorted({int(r["length"]) for r in rows if r["task"] == "passkey"})
    out["passkey"] = {str(n): rate_by_model(rows, "passkey", n, "score") for n in passkey_lengths}
    return out


# ---- the report -----------------------------------------------------------------------------------------------


def _ci(cell: dict | None, signed: bool = False) -> str:
    if not cell:
        return "-"
    sign = "+" if signed else ""
    return f"{100 * cell['mean']:{sign}.1f} [{100 * cell['lo']:{sign}.1f}, {100 * cell['hi']:{sign}.1f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _groups(positions: list[float]) -> list[str]:
    return [*position_columns(positions)]


def plot_positions(analysis: dict, out: Path) -> Path:
    """accuracy_by_position.png: exact match vs gold position at the extended length, one line per model
    with its 95% interval, and the base at L0 dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = analysis["positions"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for length in analysis["lengths"]:
        for model, groups in analysis["accuracy"][str(length)].items():
            if length != analysis["long_length"] and model != "base":
                continue
            cells = [groups[f"{p:g}"] for p in pos]
            y = [100 * c["mean"] for c in cells]
            err = [[100 * (c["mean"] - c["lo"]) for c in cells], [100 * (c["hi"] - c["mean"]) for c in cells]]
            style = "-o" if length == analysis["long_length"] else "--"
            ax.errorbar(pos, y, yerr=err, fmt=style, capsize=3, label=f"{model} @ {length} tokens")
    ax.set_xlabel("gold document position (0 = first, 1 = last)")
    ax.set_ylabel("exact match, % (95% bootstrap CI)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def render_report(
    cfg: Config, analysis: dict, base: dict, command: str, diagnosis: dict | None = None
) -> str:
    """report.md: the base build, accuracy by position per length, the differences that carry the claim,
    quote faithfulness and passkey; every accuracy with its 95% bootstrap interval over questions."""
    groups = _groups(analysis["positions"])
    seeds = ", ".join(str(s) for s in cfg.repro.seeds)
    ok = "reached" if base.get("reached_target") else "DID NOT reach"
    lines = [
        "# Toy-scale reproduction: paraphrase-the-original-text vs lost in the middle",
        "",
        f"Command: `{command}`",
        "",
        f"Toy base: {base['parameters'] / 1e6:.2f}M-parameter Qwen2 trained at L0 = {cfg.repro.base.context} tokens "
        f"for {base['steps']} steps ({base['minutes']:.1f} min, cached); in-distribution validation exact match "
        f"{100 * base['validation_accuracy']:.1f}% on {base['validation_questions']} fresh-world questions — {ok} "
        f"the {100 * cfg.repro.base.target_accuracy:.0f}% target.",
        f"Extension: RoPE {cfg.model.rope.type} x{cfg.repro.length_factor}. Arms (QLoRA, seeds {seeds}): "
        + ", ".join(f"{a} = {m}" for a, m in cfg.repro.arms.items())
        + f"; {cfg.data.num_samples} samples and {cfg.train.max_steps} steps each, same records and seed.",
        "Cells: exact match % [95% bootstrap interval over (seed, question) units]; positions are fractions of "
        f"the document list; middle = positions in [{MIDDLE[0]}, {MIDDLE[1]}].",
    ]
    if diagnosis:
        lines += ["", *diagnosis_lines(diagnosis)]
    for length in analysis["lengths"]:
        table = analysis["accuracy"][str(length)]
        lines += ["", f"## Accuracy by gold position, {length}-token prompts", ""]
        lines += _table(["model", *groups], [[m, *(_ci(t.get(g)) for g in groups)] for m, t in table.items()])
    lines += ["", f"## Differences at {analysis['long_length']} tokens (paired, percentage points)", ""]
    diffs = analysis["differences"]
    lines += _table(
        ["comparison", *groups], [[k, *(_ci(d.get(g), True) for g in groups)] for k, d in diffs.items()]
    )
    lines += ["", "Reading: " + verdict(diffs)]
    q = analysis["quotes"]
    lines += ["", f"## Quotes and passkey at {analysis['long_length']} tokens", ""]
    header = ["model", "replies with a quote", "quotes verbatim in the gold document", "near-miss quotes"]
    lines += _table(header, [[m, *(f"{100 * q[k].get(m, 0):.1f}%" for k in q)] for m in analysis["models"]])
    for length, by_model in analysis["passkey"].items():
        lines += [
            "",
            f"Passkey at {length} tokens: " + ", ".join(f"{m} {100 * v:.0f}%" for m, v in by_model.items()),
        ]
    lines += ["", "![accuracy by position](plots/accuracy_by_position.png)", ""]
    return "\n".join(lines)


def diagnosis_lines(d: dict) -> list[str]:
    """The toy base's validation broken down (`toybase.diagnose`): per question type, and document lookup."""
    lines = [
        f"## The toy base at L0, by question type ({d['questions']} fresh validation questions, no extension)",
        "",
        f"Exact match {100 * d['exact_match']:.1f}%. Replies naming a document: "
        f"{100 * d['replies_naming_a_document']:.1f}%; naming the gold document: "
        f"{100 * d['replies_naming_the_gold_document']:.1f}% (a base that answers by matching the attribute "
        "type, not by looking the entity up, answers closed-set types and names the wrong document). "
        f"Answers found somewhere in the prompt: {100 * d.get('answers_found_in_the_prompt', 0.0):.1f}%.",
        "",
    ]
    rows = [[t, f"{100 * c['exact_match']:.0f}%", str(c["n"])] for t, c in d["by_question_type"].items()]
    return lines + _table(["question type", "exact match", "n"], rows)


def verdict(diffs: dict) -> str:
    """One sentence per comparison on the middle positions: does the 95% interval exclude zero?"""
    parts = []
    for name, groups in diffs.items():
        cell = groups.get("middle") or groups.get("all")
        if not cell:
            continue
        if cell["lo"] > 0:
            word = "better (interval above 0)"
        elif cell["hi"] < 0:
            word = "worse (interval below 0)"
        else:
            word = "not distinguishable (interval contains 0)"
        parts.append(f"{name} in the middle: {_ci(cell, True)} points, {word}.")
    return " ".join(parts) or "no paired comparison available."


def write_report(
    cfg: Config, eval_dirs: dict[int, Path], base_info: dict, command: str | None = None
) -> Path:
    """Analyse every seed's predictions and write report.md, repro.json and plots/ into the run folder;
    returns the report's path."""
    root = run_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    analysis = analyse(cfg, load_rows(eval_dirs))
    # The run folder's resolved config (written by prepare_run_dir) reproduces this run, overrides included.
    command = command or f"python -m ray_jobs.repro --config {root / 'config.yaml'}"
    plot_positions(analysis, root / "plots" / "accuracy_by_position.png")
    report = root / "report.md"
    report.write_text(render_report(cfg, analysis, base_info["summary"], command, base_info.get("diagnosis")))
    dump = {
        "analysis": analysis,
        "base": base_info,
        "eval_dirs": {str(s): str(d) for s, d in eval_dirs.items()},
    }
    (root / "repro.json").write_text(json.dumps(dump, indent=2))
    logger.info("repro report: %s", report)
    return report
