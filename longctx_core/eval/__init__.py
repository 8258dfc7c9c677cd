"""Evaluation: does the model find information anywhere in a long context?

Tasks (each builds `prompts.Prompt`s on the driver): `contexts` (multi-document QA with the gold document at
fixed positions x lengths), `passkey`, `perplexity`, `longbench`, `litm`. `generate` runs them per model on a
Ray Data actor pool, `scoring` holds the metrics, `report` / `plots` / `markdown` write the run's `eval/`
folder, and `runner.check` + `runner.run` are the evaluate stage (`python -m ray_jobs.evaluate`).
"""
