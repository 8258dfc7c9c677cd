"""LongBench (THUDM, Bai et al. 2023) with its own protocol, so scores compare with published ones.

Protocol, as in LongBench's `pred.py` / `eval.py`:
- the subset's prompt template (`PROMPTS`) filled with the sample's `context` and `input`;
- if the prompt exceeds the model's window, keep its first and last `max_length // 2` tokens (truncation
  from the middle: instructions sit at both ends), decoded back to text;
- wrap it in the model's chat template (LongBench does so for every subset used here), greedy decoding
  with the subset's generation budget (`MAX_NEW_TOKENS`);
- score with the subset's metric (`scoring.LONGBENCH_METRICS`: F1, Rouge-L for dureader, exact match for
  passage retrieval), maximised over the gold answers; a subset's score is the mean (x100 in tables).

Samples come from `datasets.load_dataset(<dataset>, <subset>, split="test")` on a cluster, or from a local
folder of `<subset>.jsonl` files in the same format (LongBench's `data.zip`): one JSON object per line with
`input`, `context`, `answers` (list), `length`, `dataset`, `language`, `all_classes`, `_id`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from longctx_core.errors import LongctxError
from longctx_core.eval.prompts import Prompt, chat_ids, chat_overhead

logger = logging.getLogger(__name__)

_MULTIDOC_EN = (
    "Answer the question based on the given passages. Only give me the answer and do not output any other "
    "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given "
    "passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
)
PROMPTS = {
    "hotpotqa": _MULTIDOC_EN,
    "2wikimqa": _MULTIDOC_EN,
    "musique": _MULTIDOC_EN,
    "dureader": "请基于给定的文章回答下述问题。\n\n文章：{context}\n\n请基于上述文章回答下面的问题。\n\n问题：{input}\n回答：",
    "passage_retrieval_en": (
        "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the "
        "abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number "
        'of the paragraph that the abstract is from. The answer format must be like "Paragraph 1", '
        '"Paragraph 2", etc.\n\nThe answer is: '
    ),
    "passage_retrieval_zh": (
        "以下是若干段落文字，以及其中一个段落的摘要。请确定给定的摘要出自哪一段。\n\n{context}\n\n下面是一个摘要\n\n"
        '{input}\n\n请输入摘要所属段落的编号。答案格式必须是"段落1"，"段落2"等格式\n\n答案是：'
    ),
    "multifieldqa_en": (
        "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based "
        "on the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\n"
        "Answer:"
    ),
    "multifieldqa_zh": (
        "阅读以下文字并用中文简短回答：\n\n{context}\n\n现在请基于上面的文章回答下面的问题，只告诉我答案，"
        "不要输出任何其他字词。\n\n问题：{input}\n回答："
    ),
}
MAX_NEW_TOKENS = {
    "hotpotqa": 32,
    "2wikimqa": 32,
    "musique": 32,
    "dureader": 128,
    "passage_retrieval_en": 32,
    "passage_retrieval_zh": 32,
    "multifieldqa_en": 64,
    "multifieldqa_zh": 64,
}
_FIELDS = ("input", "context", "answers")


def load_subset(subset: str, dataset: str, path: str | None, limit: int | None) -> list[dict]:
    """The subset's test samples (first `limit`), from `<path>/<subset>.jsonl` when `path` is set, else
    through `datasets`. Raises LongctxError when the file/dataset is missing or lacks LongBench's fields."""
    if path is not None:
        folder = Path(path).expanduser()
        candidates = [folder / f"{subset}.jsonl", folder / "data" / f"{subset}.jsonl"]
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            raise LongctxError(f"eval.longbench.path: no {subset}.jsonl in {folder} (or its data/ folder)")
        rows = []
        with file.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rows.append(json.loads(line))
                if limit and len(rows) >= limit:
                    break
        source = str(file)
    else:
        import datasets

        try:
            ds = datasets.load_dataset(dataset, subset, split="test")
        except Exception as exc:  # hub/network/script errors all mean the same to the user: no data
            raise LongctxError(
                f"eval.longbench.dataset: cannot load {dataset!r} subset {subset!r} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "set eval.longbench.path to a folder of <subset>.jsonl files"
            ) from None
        rows = [dict(r) for r in (ds.select(range(min(limit, len(ds)))) if limit else ds)]
        source = f"{dataset}/{subset}"
    for i, row in enumerate(rows):
        missing = [f for f in _FIELDS if f not in row]
        if missing:
            raise LongctxError(f"LongBench {source}: sample {i} lacks fields {missing}")
    logger.info("LongBench %s: %d samples from %s", subset, len(rows), source)
    return rows


def truncate_middle(tokenizer, prompt: str, max_length: int) -> tuple[str, bool]:
    """LongBench's truncation: if `prompt` has more than `max_length` tokens, keep the first and last
    `max_length // 2` tokens (decoded back to text). Returns (prompt, whether it was truncated)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_length:
        return prompt, False
    half = max_length // 2
    head = tokenizer.decode(ids[:half], skip_special_tokens=True)
    tail = tokenizer.decode(ids[-half:], skip_special_tokens=True)
    return head + tail, True


def window_for(subset: str, model_limit: int, overhead: int, max_length: int | None) -> int:
    """Prompt tokens kept before chat wrapping: `max_length` when set, else what the model's window leaves
    after the chat template (`overhead`) and the subset's generation budget."""
    if max_length is not None:
        return max_length
    window = model_limit - overhead - MAX_NEW_TOKENS[subset]
    if window < 64:
        raise LongctxError(
            f"eval.longbench: the model's context ({model_limit} tokens) leaves no room for prompts"
        )
    return window


def longbench_prompts(tokenizer, subsets, dataset, path, limit, max_length, model_limit) -> list[Prompt]:
    """Prompts for every sample of the chosen subsets, truncated from the middle to the window."""
    overhead = chat_overhead(tokenizer) + 2  # +2: re-encoding decoded halves may merge/split a token
    prompts = []
    for subset in subsets:
        window = window_for(subset, model_limit, overhead, max_length)
        n_cut = 0
        for i, row in enumerate(load_subset(subset, dataset, path, limit)):
            text, cut = truncate_middle(
                tokenizer, PROMPTS[subset].format(context=row["context"], input=row["input"]), window
            )
            n_cut += cut
            answers = row["answers"] if isinstance(row["answers"], list) else [row["answers"]]
            prompts.append(
                Prompt(
                    prompt_id=f"longbench-{subset}-{row.get('_id', i)}",
                    task="longbench",
                    input_ids=chat_ids(tokenizer, [{"role": "user", "content": text}]),
                    cell={"subset": subset},
                    max_new_tokens=MAX_NEW_TOKENS[subset],
                    answers=[str(a) for a in answers],
                    lang="zh" if subset.endswith("_zh") or subset == "dureader" else "en",
                    extra={"truncated": cut, "length": row.get("length")},
                )
            )
        logger.info(
            "LongBench %s: window %d tokens, %d prompts truncated from the middle", subset, window, n_cut
        )
    return prompts
