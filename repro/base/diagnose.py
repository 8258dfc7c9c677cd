"""Diagnose the cached toy bases of a repro config without training anything: for each seed, where its
base is, how its build ended, and what its answers are made of (`validate.diagnose`, kept beside the base).

    python -m repro.base.diagnose --config ray_jobs/configs/repro_cpu.yaml 'repro.seeds=[0, 1, 2]'
    make repro-diagnose REPRO_ARGS="'repro.seeds=[0, 1, 2]' eval.qa.num_questions=290"

A base below its target is diagnosed as it was last saved (`make repro-base` would train it on); a build that
has not ended a run yet (killed, or still under way) is diagnosed at its last checkpoint. The line
to read is exact match against `random document`: a base that copies a value from its prompt (`in the
prompt` near 100%) at the rate of a document drawn at random has not learnt to find the entity's document;
if it also answers questions it trained on at that rate, it has not memorised them either. The last figures
are the attention its most attentive head pays from the answer slot to the question's name, per layer: of the
finished bases measured so far, those that learnt the lookup read the name in layer 0, those that did not
only in the last layer (README, toy-scale section); then to the gold document's value, and how often the
base's most likely token at that slot is the value: a head that finds the value the base does not predict
is a lookup without its copy.
"""

from __future__ import annotations

import argparse
import json

from repro.base.cache import base_diagnosis, toy_base_dir
from repro.base.checkpoint import INFO_FILE, STATE_FILE, read_base_info
from repro.base.validate import diagnose_folder
from repro.config import base_seeds, load_repro_config, seed_config

PRESET = "ray_jobs/configs/repro_cpu.yaml"


def diagnose_bases(cfg) -> dict[int, dict | None]:
    """seed -> {dir, summary, diagnosis, partial} of each seed's cached base, or of the last checkpoint of a
    build that has not finished a run yet (`partial`: killed, or still under way; diagnosed afresh each
    time, as it moves on); None: nothing built yet."""
    found: dict[int, dict | None] = {}
    for seed in base_seeds(cfg):
        scfg = seed_config(cfg, seed)
        folder = toy_base_dir(scfg)
        checkpoint = folder.with_name(folder.name + ".partial")
        if (folder / INFO_FILE).is_file():
            summary = read_base_info(folder)["summary"]
            diagnosis = base_diagnosis(scfg, folder)
            found[seed] = {"dir": str(folder), "summary": summary, "diagnosis": diagnosis, "partial": False}
        elif (checkpoint / STATE_FILE).is_file():
            state = json.loads((checkpoint / STATE_FILE).read_text())
            accuracy = state["curve"][-1]["accuracy"] if state["curve"] else 0.0
            summary = {
                "steps": state["steps"],
                "minutes": state["minutes"],
                "validation_accuracy": accuracy,
                "reached_target": accuracy >= scfg.repro.base.target_accuracy,
            }
            diagnosis = diagnose_folder(scfg, checkpoint)
            found[seed] = {
                "dir": str(checkpoint),
                "summary": summary,
                "diagnosis": diagnosis,
                "partial": True,
            }
        else:
            found[seed] = None
    return found


def describe(seed: int, base: dict | None) -> str:
    """One line per seed (see the module docstring)."""
    if base is None:
        return f"seed {seed}: no base built yet (make repro-base)"
    s, d = base["summary"], base["diagnosis"]
    reached = "reached" if s["reached_target"] else "below"
    kind = "the checkpoint of an unfinished build, " if base.get("partial") else ""
    return (
        f"seed {seed}: {base['dir']}: {kind}{s['steps']} steps, {s['minutes']:.1f} min, validation "
        f"{100 * s['validation_accuracy']:.1f}% ({reached} its target); {d['questions']} fresh questions at "
        f"L0, gold positions uniform: exact match {100 * d['exact_match']:.1f}%, random document "
        f"{100 * d['random_document_copy']:.1f}%, in the prompt {100 * d['answers_found_in_the_prompt']:.1f}%, "
        f"naming the gold document {100 * d['replies_naming_the_gold_document']:.1f}%; on "
        f"{d['training_questions']} questions it trained on {100 * d['training_exact_match']:.1f}%; its "
        "question-name head by layer " + " / ".join(f"{a:.2f}" for a in d["question_name_attention"]) + "; "
        "gold-value head by layer " + " / ".join(f"{a:.2f}" for a in d["gold_value_attention"]) + ", value "
        f"predicted at the slot {100 * d['slot_exact_match']:.1f}%"
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
