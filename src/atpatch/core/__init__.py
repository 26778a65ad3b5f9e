"""The engine: the attention seam, column features, the detector, attention redistribution and the
patched classifier. Depends only on torch, transformers, numpy and safetensors (import-linter
contract in pyproject.toml); everything else in AtPatch builds on it."""
