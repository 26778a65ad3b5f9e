"""Serving AtPatch: the MLflow pyfunc model (`pyfunc_model.py`, a "model from code" file).

`pyfunc_model.py` is not imported by the package: MLflow executes it when a registered patch is
loaded. Its input helpers can be imported for tests (`atpatch.ops.serving.pyfunc_model`).
"""
