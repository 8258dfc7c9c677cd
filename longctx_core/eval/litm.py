"""Lost in the Middle (Liu et al. 2023): the NQ multi-document QA files with the gold passage at each position.

Files, as published in nelson-liu/lost-in-the-middle `qa_data/`:

    10_total_documents/nq-open-10_total_documents_gold_at_{0,4,9}.jsonl.gz
    20_total_documents/nq-open-20_total_documents_gold_at_{0,4,9,14,19}.jsonl.gz
    30_total_documents/nq-open-30_total_documents_gold_at_{0,4,9,14,19,24,29}.jsonl.gz

one JSON object a line: `question`, `answers` (list), `ctxs` (list of `{title, text, isgold, ...}`; the gold
passage sits at index k of the file name). The prompt is the paper's `qa.prompt` (documents numbered from 1,
"Document [i](Title: t) text", one per line), or the project's own prompt format (`longctx_core.data.styles`) to
measure a model fine-tuned on it. Scores: `best_subspan_em` of the reply's first line (the paper's
protocol) and of the parsed final answer (the project's paraphrase replies quote first).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

from longctx_core.data.records import Document
from longctx_core.errors import LongctxError
from longctx_core.eval.prompts import Prompt, chat_ids

logger = logging.getLogger(__name__)

LITM_INSTRUCTION = (
    "Write a high-quality answer for the given question using only the provided search results "
    "(some of which might be irrelevant)."
)
_FILE = re.compile(r"nq-open-(\d+)_total_documents_gold_at_(\d+)\.jsonl(\.gz)?$")


def litm_prompt(question: str, documents: list[Document]) -> str:
    """The paper's QA prompt (qa.prompt) for `documents` in order."""
    lines = "\n".join(f"Document [{i + 1}](Title: {d.title}) {d.text}" for i, d in enumerate(documents))
    return f"{LITM_INSTRUCTION}\n\n{lines}\n\nQuestion: {question}\nAnswer:"


def find_files(path: str, num_docs: list[int], gold_indices: list[int] | None) -> list[tuple[int, int, Path]]:
    """(n_docs, gold index, file) for every LitM file under `path` matching the requested settings, sorted.
    Raises LongctxError when none matches."""
    root = Path(path).expanduser()
    if not root.exists():
        raise LongctxError(f"eval.litm.path: not found: {root}")
    found = []
    for file in sorted(root.rglob("*.jsonl*")) if root.is_dir() else [root]:
        m = _FILE.search(file.name)
        if m and int(m.group(1)) in num_docs and (gold_indices is None or int(m.group(2)) in gold_indices):
            found.append((int(m.group(1)), int(m.group(2)), file))
    if not found:
        raise LongctxError(
            f"eval.litm.path: no nq-open-<N>_total_documents_gold_at_<k>.jsonl(.gz) files for "
            f"N in {num_docs} under {root}"
        )
    return sorted(found)


def read_examples(file: Path, gold_index: int, limit: int | None) -> list[dict]:
    """The file's examples (first `limit`) as {question, answers, docs: [Document], gold}; checks that
    the passage marked `isgold` sits at `gold_index` (the position the file name promises)."""
    opener = gzip.open if file.suffix == ".gz" else open
    examples = []
    with opener(file, "rt", encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            ctxs = row.get("ctxs") or []
            gold = [i for i, c in enumerate(ctxs) if c.get("isgold")]
            if gold != [gold_index]:
                raise LongctxError(
                    f"{file}:{line_no}: gold passage at {gold}, but the file name says {gold_index}"
                )
            docs = [Document(title=c.get("title") or "", text=c["text"]) for c in ctxs]
            examples.append(
                {
                    "question": row["question"],
                    "answers": list(row["answers"]),
                    "docs": docs,
                    "gold": gold_index,
                }
            )
            if limit and len(examples) >= limit:
                break
    return examples


def litm_prompts(tokenizer, path, num_docs, gold_indices, limit, prompt_style: str = "litm") -> list[Prompt]:
    """One prompt per example of every selected file; `cell` = {num_docs, gold_index}."""
    from longctx_core.data import styles

    prompts = []
    for n_docs, gold_index, file in find_files(path, num_docs, gold_indices):
        for j, ex in enumerate(read_examples(file, gold_index, limit)):
            if prompt_style == "litm":
                messages = [{"role": "user", "content": litm_prompt(ex["question"], ex["docs"])}]
            else:
                messages = [
                    {"role": "system", "content": styles.SYSTEM_PROMPT["en"]},
                    {"role": "user", "content": styles.render_first_user(ex["docs"], ex["question"], "en")},
                ]
            prompts.append(
                Prompt(
                    prompt_id=f"litm-{n_docs}-gold{gold_index}-{j}",
                    task="litm",
                    input_ids=chat_ids(tokenizer, messages),
                    cell={"num_docs": n_docs, "gold_index": gold_index},
                    answers=ex["answers"],
                    extra={"docs": [d.text for d in ex["docs"]], "gold": [gold_index]},
                )
            )
    logger.info("LitM: %d prompts", len(prompts))
    return prompts
