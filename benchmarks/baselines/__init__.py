"""Baselines and ablations of AtPatch side by side, measured in one run on one workspace (issue 5).

Run: `python -m benchmarks.baselines --help` (the CLI is in __main__.py). Modules, one job each:

- config: paths and benchmarks/baselines.yaml
- bench: the workspace's victim, detector, test sets and features, and the metric code every method shares
- repair: the repair data (from the debugging set) every baseline gets, and what each one read of it
- selection: a baseline's grid of settings, chosen on the repair data (never the test sets)
- variants: AtPatch's detector recalibrated or refit, patched classifiers, its setup cost
- methods: one result row per method (unpatched, AtPatch modes, baselines)
- ablations: AtPatch with one factor changed at a time, a table of named ablations
- latency: every predictor timed round robin on the same batches
- runner: `run`, the whole measurement of one scenario
- render, plot: the BASELINES.md section and the trade-off plot
- tracking: the MLflow run
"""
