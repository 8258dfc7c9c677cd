"""Diagnose the cached toy bases of a repro config without training anything: for each seed, where its
base is, how its build ended, and what its answers are made of (`validate.diagnose`, kept beside the base).

    python -m repro.base.diagnose --config ray_jobs/configs/repro_cpu.yaml 'repro.seeds=[0, 1, 2]'
    make repro-diagnose REPRO_ARGS="'repro.seeds=[0, 1, 2]' eval.qa.num_questions=290"

A base below its target is diagnosed as it was last saved (`make repro-base` would train it on). The line
to read is exact match against `random document`: a base that copies a value from its prompt (`in the
prompt` near 100%) at the rate of a document drawn at random has not learnt to find the entity's document;
if it also answers questions it trained on at that rate, it has not memorised them either. The last figures
are the attention its most attentive head pays from the answer slot to the question's name, per layer: the
bases here that learnt the lookup read the name in layer 0, the ones that did not only in the last layer.
"""

from __future__ import annotations

import argparse

from repro.base.cache import base_diagnosis, toy_base_dir
from repro.base.checkpoint import INFO_FILE, read_base_info
from repro.config import base_seeds, load_repro_config, seed_config

PRESET = "ray_jobs/configs/repro_cpu.yaml"


def diagnose_bases(cfg) -> dict[int, dict | None]:
    """seed -> {dir, summary, diagnosis} of each seed's cached base (None: not built yet)."""
    found: dict[int, dict | None] = {}
    for seed in base_seeds(cfg):
        scfg = seed_config(cfg, seed)
        folder = toy_base_dir(scfg)
        if not (folder / INFO_FILE).is_file():
            found[seed] = None
            continue
        summary = read_base_info(folder)["summary"]
        found[seed] = {"dir": str(folder), "summary": summary, "diagnosis": base_diagnosis(scfg, folder)}
    return found


def describe(seed: int, base: dict | None) -> str:
    """One line per seed (see the module docstring)."""
    if base is None:
        return f"seed {seed}: no base built yet (make repro-base)"
    s, d = base["summary"], base["diagnosis"]
    reached = "reached" if s["reached_target"] else "below"
    return (
        f"seed {seed}: {base['dir']}: {s['steps']} steps, {s['minutes']:.1f} min, validation "
        f"{100 * s['validation_accuracy']:.1f}% ({reached} its target); {d['questions']} fresh questions at "
        f"L0, gold positions uniform: exact match {100 * d['exact_match']:.1f}%, random document "
        f"{100 * d['random_document_copy']:.1f}%, in the prompt {100 * d['answers_found_in_the_prompt']:.1f}%, "
        f"naming the gold document {100 * d['replies_naming_the_gold_document']:.1f}%; on "
        f"{d['training_questions']} questions it trained on {100 * d['training_exact_match']:.1f}%; its "
        "question-name head by layer " + " / ".join(f"{a:.2f}" for a in d["question_name_attention"])
    )


def main(argv=None) -> dict[int, dict | None]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=PRESET)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, as for make repro")
    args = parser.parse_args(argv)
    found = diagnose_bases(load_repro_config(args.config, args.overrides))
    for seed, base in found.items():
        print(describe(seed, base))
    return found


if __name__ == "__main__":
    main()
