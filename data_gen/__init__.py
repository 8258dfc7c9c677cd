"""The data jobs on Ray Data: long QA samples synthesized from a source, chat and raw text imported, mixtures.

stage          the synthesize stage (`python -m ray_jobs.synthesize`; entry point `synthesize`)
synthesis      QA samples composed on Ray Data (planning, composing, the stage)
importing      chat / raw-text sources and mixtures imported into training rows (reading, rows, on_ray,
               writing, source, the stage)
chat_import    chat formats (messages, sharegpt, prompt/response) -> messages
rawtext        raw text cut into pieces for continued pre-training
mix            shares of a mixture, by training tokens
tokenizer      the tokenizer samples are counted and rendered with
light_tokenizer a lighter token counter for the composer's actors
outputs        shard writers, stats figures, plots
quarantine     bad rows: quarantine/rows.jsonl, counts by reason, the data.max_bad_fraction rule
validate       checks a written sample row (quotes verbatim, answers, positions)

What the evaluation shares with synthesis (records, sources, the built-in world, composition, answer styles)
lives in `longctx_core.data`.
"""
