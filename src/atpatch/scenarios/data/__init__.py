"""Data: fetching raw datasets, loading them, and building poisoned / debugging splits."""
