"""The repro's report: report.md (the base build, accuracy by gold position per length, the paired
differences that carry the claim, quotes and passkey), repro.json (the analysis) and plots/, written into
the run folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from longctx_core.config import run_dir
from longctx_core.eval.markdown import markdown_table
from longctx_core.infra.plotting import pyplot
from repro.analysis import MIDDLE, U_GAP, analyse, load_rows, position_columns
from repro.config import ReproConfig

logger = logging.getLogger(__name__)


def _ci(cell: dict | None, signed: bool = False) -> str:
    """A bootstrap cell as "mean [lo, hi]" in percent ("-" when the comparison was not possible)."""
    if not cell:
        return "-"
    sign = "+" if signed else ""
    return f"{100 * cell['mean']:{sign}.1f} [{100 * cell['lo']:{sign}.1f}, {100 * cell['hi']:{sign}.1f}]"


def _groups(positions: list[float]) -> list[str]:
    """The report's column names: each position, then "middle" and "all"."""
    return [*position_columns(positions)]


def plot_positions(analysis: dict, out: Path) -> Path:
    """accuracy_by_position.png: exact match vs gold position at the extended length, one line per model
    with its 95% interval, and the base at L0 dashed."""
    plt = pyplot()
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


def base_line(cfg: ReproConfig, base: dict, seed: int | None = None) -> str:
    """One toy base's build in a sentence: size, steps, minutes, validation, target reached or not."""
    ok = "reached" if base.get("reached_target") else "DID NOT reach"
    who = f"Toy base (seed {seed})" if seed is not None else "Toy base"
    return (
        f"{who}: {base['parameters'] / 1e6:.2f}M-parameter Qwen2 trained at L0 = {cfg.repro.base.context} tokens "
        f"for {base['steps']} steps ({base['minutes']:.1f} min, cached); in-distribution validation exact match "
        f"{100 * base['validation_accuracy']:.1f}% on {base['validation_questions']} fresh-world questions — {ok} "
        f"the {100 * cfg.repro.base.target_accuracy:.0f}% target."
    )


def long_line(cfg: ReproConfig, long: dict, seed: int | None = None) -> str:
    """The long pre-training of one base in a sentence (`repro.long_pretrain`)."""
    lp = cfg.repro.long_pretrain
    where = f"Beta({lp.gold_beta:g}, {lp.gold_beta:g}) per gold" if lp.gold_beta else "uniform"
    who = f" (seed {seed})" if seed is not None else ""
    return (
        f"Long pre-training{who}: the base with RoPE {cfg.model.rope.type} x{cfg.repro.length_factor}, fully "
        f"trained for {long['steps']} steps ({long['minutes']:.1f} min, cached) on base samples up to "
        f"{cfg.repro.length_factor * cfg.repro.base.context} tokens with gold documents placed {where}; "
        f"validation exact match {100 * long['validation_accuracy']:.1f}% on {long['validation_questions']} "
        "questions of that placement. The evaluation's `base` is this model."
    )


def weak_base_why(d: dict) -> str:
    """What a below-target base's diagnosis (`repro.base.cache.base_diagnosis`) says went wrong, in a
    sentence: its figures, then each failure they show (several can hold at once)."""
    reads = d["question_name_attention"][:-1] or d["question_name_attention"]
    name_layer = max(range(len(reads)), key=reads.__getitem__)
    value = d["gold_value_attention"]
    value_layer = max(range(len(value)), key=value.__getitem__)
    figures = (
        f"fresh exact match {100 * d['exact_match']:.1f}% (copying a random document's value: "
        f"{100 * d['random_document_copy']:.1f}%), {100 * d['training_exact_match']:.1f}% on trained-on "
        f"questions; its heads read the question's name at {reads[name_layer]:.2f} (layer {name_layer}) and "
        f"the gold value at {value[value_layer]:.2f} (layer {value_layer}); the value is its most likely token "
        f"at the answer slot in {100 * d['slot_exact_match']:.1f}% of prompts"
    )
    causes = []
    if reads[name_layer] < 0.5:
        causes.append("no layer below the last reads the asked name, so it cannot look the entity up")
    elif value[value_layer] < 0.5:
        causes.append("it reads the asked name but no head finds the gold value")
    elif d["slot_exact_match"] < 0.5:
        causes.append("its heads find the gold value but it does not copy it (a lookup without its copy)")
    if d["training_exact_match"] - d["exact_match"] >= 0.15:
        causes.append("it answers facts it trained on far better than fresh ones (memory, not lookup)")
    if d["exact_match"] <= d["random_document_copy"] + 0.05:
        causes.append("on fresh questions it is no better than copying a random document's value")
    return figures + (": " + "; ".join(causes) if causes else "") + "."


def left_out_lines(cfg: ReproConfig, bases: dict[int, dict], seeds: list[int]) -> list[str]:
    """`repro.skip_weak_bases`: each seed left out of the arms, its base's figures and why it failed."""
    out = [s for s in bases if s not in seeds]
    if not out:
        return []
    lines = ["", "## Seeds left out", ""]
    for seed in out:
        base = bases[seed]["summary"]
        why = bases[seed].get("diagnosis")
        lines.append(
            f"- Seed {seed}: its toy base reached {100 * base['validation_accuracy']:.1f}% after {base['steps']} "
            f"steps ({base['minutes']:.1f} min), below the {100 * cfg.repro.base.target_accuracy:.0f}% target, "
            "so its arms did not run and no table below counts it (repro.skip_weak_bases). "
            + (f"Its diagnosis at L0: {weak_base_why(why)}" if why else "")
        )
    return lines


def render_report(
    cfg: ReproConfig, analysis: dict, bases: dict[int, dict], command: str, seeds: list[int]
) -> str:
    """report.md: the base build(s), accuracy by position per length, the curve's shape, the differences
    that carry the claim, quote faithfulness and passkey; every accuracy with its 95% bootstrap interval
    (over questions, and over seeds too when there are several). `bases`: see `write_report`; `seeds`: the
    seeds whose arms ran; the other seeds of `bases` are listed as left out."""
    groups = _groups(analysis["positions"])
    ran = list(seeds)
    one = len(bases) == 1
    lines = [
        "# Toy-scale reproduction: paraphrase-the-original-text vs lost in the middle",
        "",
        f"Command: `{command}`",
        "",
        *(base_line(cfg, info["summary"], None if one else seed) for seed, info in bases.items()),
        *(long_line(cfg, i["long"]["summary"], None if one else s) for s, i in bases.items() if "long" in i),
        f"Extension: RoPE {cfg.model.rope.type} x{cfg.repro.length_factor}. Arms (QLoRA, seeds "
        + ", ".join(str(s) for s in ran)
        + "): "
        + ", ".join(f"{a} = {m}" for a, m in cfg.repro.arms.items())
        + f"; {cfg.data.num_samples} samples and {cfg.train.max_steps} steps each, same records and seed.",
        "Cells: exact match % [95% bootstrap interval over (seed, question) units"
        + ("; hierarchical: seeds drawn first, then questions within each seed" if len(ran) > 1 else "")
        + f"]; positions are fractions of the document list; middle = positions in [{MIDDLE[0]}, {MIDDLE[1]}].",
        *left_out_lines(cfg, bases, ran),
    ]
    for seed, info in bases.items():
        if info.get("diagnosis"):
            lines += ["", *diagnosis_lines(info["diagnosis"], None if one else seed)]
        if info.get("long", {}).get("diagnosis"):
            where = f"after its long pre-training, at {cfg.repro.length_factor} x L0"
            lines += ["", *diagnosis_lines(info["long"]["diagnosis"], None if one else seed, where)]
    for length in analysis["lengths"]:
        table = analysis["accuracy"][str(length)]
        lines += ["", f"## Accuracy by gold position, {length}-token prompts", ""]
        lines += markdown_table(
            ["model", *groups], [[m, *(_ci(t.get(g)) for g in groups)] for m, t in table.items()]
        )
    lines += curve_lines(analysis)
    lines += ["", f"## Differences at {analysis['long_length']} tokens (paired, percentage points)", ""]
    diffs = analysis["differences"]
    lines += markdown_table(
        ["comparison", *groups], [[k, *(_ci(d.get(g), True) for g in groups)] for k, d in diffs.items()]
    )
    lines += ["", "Reading: " + verdict(diffs)]
    lines += by_seed_lines(analysis)
    q = analysis["quotes"]
    lines += ["", f"## Quotes and passkey at {analysis['long_length']} tokens", ""]
    header = ["model", "replies with a quote", "quotes verbatim in the gold document", "near-miss quotes"]
    lines += markdown_table(
        header, [[m, *(f"{100 * q[k].get(m, 0):.1f}%" for k in q)] for m in analysis["models"]]
    )
    for length, by_model in analysis["passkey"].items():
        lines += [
            "",
            f"Passkey at {length} tokens: " + ", ".join(f"{m} {100 * v:.0f}%" for m, v in by_model.items()),
        ]
    lines += ["", "![accuracy by position](plots/accuracy_by_position.png)", ""]
    return "\n".join(lines)


def curve_lines(analysis: dict) -> list[str]:
    """Does each model lose the middle at the extended length? Edges (first and last position) against the
    middle, their paired difference, and the verdict of `curve_shape`."""
    length = analysis["long_length"]
    curve = analysis.get("curve", {}).get(str(length))
    if not curve:
        return []
    lines = [
        "",
        f"## Does a model lose the middle at {length} tokens?",
        "",
        f"Edges = the first and last gold positions together. A curve counts as lost-in-the-middle when the "
        f"middle trails the edges by at least {U_GAP:g} points and the two intervals do not overlap.",
        "",
    ]
    rows = [
        [
            m,
            _ci(c["edges"]),
            _ci(c["middle"]),
            _ci(c["edges - middle"], True),
            "yes" if c["loses_the_middle"] else "no",
        ]
        for m, c in curve.items()
    ]
    return lines + markdown_table(["model", "edges", "middle", "edges - middle", "loses the middle"], rows)


def by_seed_lines(analysis: dict) -> list[str]:
    """With several seeds: each seed's models (edges, middle, all, loses the middle) and the arms' paired
    differences at the extended length, intervals over that seed's questions alone."""
    per_seed = analysis.get("by_seed")
    if not per_seed:
        return []
    length = analysis["long_length"]
    lines = [
        "",
        f"## Each seed alone, {length}-token prompts",
        "",
        "The pooled tables above draw seeds, then questions; here each seed's intervals are over its own "
        "questions, so a seed that behaves unlike the others shows.",
        "",
    ]
    rows = [
        [
            seed,
            model,
            _ci(c.get("edges")),
            _ci(c.get("middle")),
            _ci(c["all"]),
            ("yes" if c["loses_the_middle"] else "no") if "loses_the_middle" in c else "-",
        ]
        for seed, figures in per_seed.items()
        for model, c in figures["models"].items()
    ]
    lines += markdown_table(["seed", "model", "edges", "middle", "all", "loses the middle"], rows)
    rows = [
        [seed, name, _ci(d.get("middle"), True), _ci(d.get("all"), True)]
        for seed, figures in per_seed.items()
        for name, d in figures["differences"].items()
    ]
    if rows:
        lines += ["", *markdown_table(["seed", "comparison", "middle", "all"], rows)]
    return lines


def diagnosis_lines(d: dict, seed: int | None = None, where: str = "at L0, no extension") -> list[str]:
    """The toy base's validation broken down (`repro.base.cache.base_diagnosis`, which keeps every field):
    per question type, document lookup, memory, the layers that read the name and the value, and gold third."""
    who = f"The toy base of seed {seed}" if seed is not None else "The toy base"
    by_layer = ", ".join(f"layer {k}: {a:.2f}" for k, a in enumerate(d["question_name_attention"]))
    to_value = ", ".join(f"layer {k}: {a:.2f}" for k, a in enumerate(d["gold_value_attention"]))
    lines = [
        f"## {who} {where}, by question type ({d['questions']} fresh validation questions)",
        "",
        f"Exact match {100 * d['exact_match']:.1f}%. Replies naming a document: "
        f"{100 * d['replies_naming_a_document']:.1f}%; naming the gold document: "
        f"{100 * d['replies_naming_the_gold_document']:.1f}% (a base that answers by matching the attribute "
        "type, not by looking the entity up, answers closed-set types and names the wrong document). "
        f"Answers found somewhere in the prompt: {100 * d['answers_found_in_the_prompt']:.1f}%.",
        f"Copying the value of a document drawn at random would score "
        f"{100 * d['random_document_copy']:.1f}%: a base near it copies a value without finding the "
        "entity's document.",
        f"On {d['training_questions']} questions of its first training world (facts it trained on) it "
        f"scores {100 * d['training_exact_match']:.1f}% (far above the fresh questions would mean it memorised "
        "facts rather than looking them up).",
        f"Attention of its most attentive head from the answer slot to the question's name, by layer: "
        f"{by_layer} (the lookup needs it below the last layer, which has no layer after it to match the "
        "documents' names with). To the gold document's value: "
        f"{to_value}; its most likely token there is the value in {100 * d['slot_exact_match']:.1f}% of the "
        "prompts (a head that finds the value without the base predicting it is a lookup without its copy).",
        "",
    ]
    rows = [[t, f"{100 * c['exact_match']:.0f}%", str(c["n"])] for t, c in d["by_question_type"].items()]
    lines += markdown_table(["question type", "exact match", "n"], rows)
    lines += ["", "By where the gold document sat in the list (positions uniform):", ""]
    rows = [[t, f"{100 * c['exact_match']:.0f}%", str(c["n"])] for t, c in d["by_gold_third"].items()]
    lines += markdown_table(["gold in the", "exact match", "n"], rows)
    return lines


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
    cfg: ReproConfig, eval_dirs: dict[int, Path], bases: dict[int, dict], command: str | None = None
) -> Path:
    """Analyse every seed's predictions and write report.md, repro.json and plots/ into the run folder;
    `bases`: each base's info (`read_base_info` + "diagnosis") by the seed that built it (one entry when
    the seeds share a base). Returns the report's path."""
    root = run_dir(cfg)
    root.mkdir(parents=True, exist_ok=True)
    analysis = analyse(cfg, load_rows(eval_dirs))
    # The run folder's resolved config (written by prepare_run_dir) reproduces this run, overrides included.
    command = command or f"python -m ray_jobs.repro --config {root / 'config.yaml'}"
    plot_positions(analysis, root / "plots" / "accuracy_by_position.png")
    report = root / "report.md"
    report.write_text(render_report(cfg, analysis, bases, command, list(eval_dirs)))
    dump = {
        "analysis": analysis,
        "bases": {str(seed): info for seed, info in bases.items()},
        "eval_dirs": {str(s): str(d) for s, d in eval_dirs.items()},
        "left_out": [s for s in bases if s not in eval_dirs],
    }
    (root / "repro.json").write_text(json.dumps(dump, indent=2))
    logger.info("repro report: %s", report)
    return report
