"""AtPatch's benchmarks. A package so that a multi-module benchmark runs as `python -m benchmarks.<name>` from the
repository root (benchmarks.baselines); the single-file ones still run as scripts."""
