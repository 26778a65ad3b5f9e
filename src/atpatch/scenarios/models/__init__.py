"""Victim models: builders, input preprocessing and safetensors-only loading."""
