"""The stage runner behind `python -m ray_jobs.<stage>`, `make demo` and `make submit`.

cli            arguments, config, checks before Ray, exit codes (`run_stage`)
stages         stage name -> check and run functions; stages of upper layers come as entry points
chain          the pipeline stage: synthesize -> train -> evaluate in one run folder
markers        which stages are done for this config; running the rest in order
two_stage      continued pre-training, then SFT from its adapter
report         the run's report.md and headline numbers
cluster_checks a config against a cluster's node types before submission
"""
