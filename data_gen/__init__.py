"""Long-context sample synthesis: QA sources, the composer, answer styles, the built-in corpus, Ray Data.

builtin    the procedural bilingual world (also trains the tiny tokenizer: `tokenizer_training_texts`)
sources    one loader per `data.source.kind` -> `QARecord` | `Malformed`
evidence   the sentence(s) of the gold document(s) that hold the answer
styles     prompt/answer templates (en, zh) and `split_reply`, their parser
compose    one long sample from records + a distractor pool (`compose_sample`)
split      the deterministic train/eval split of questions (`split_of`)
pipeline   the synthesize stage on Ray Data; outputs: Parquet shards, stats, plots, quarantine
validate   checks a written sample row (quotes verbatim, answers, positions)
"""
