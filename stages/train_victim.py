"""Stage `train_victim`: train (or fine-tune) the scenario's victim on its poisoned/skewed split.

Writes a save_pretrained directory (safetensors) to `data/<scenario>/victim` atomically and logs
the training curve to MLflow.
"""

from __future__ import annotations

from atpatch.io import atomic_dir
from atpatch.scenarios import kind_module, pin_threads, stage_params
from atpatch.ops.tracking import stage_run


def main(params: dict) -> None:
    import mlflow

    p, seed = params["train_victim"], params["seed"]
    pin_threads(params)
    with stage_run("train_victim", params["scenario"], p, seed):
        model = kind_module(params).train_victim(params, mlflow.log_metrics)
        with atomic_dir(p["out"]) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            save_tokenizer = getattr(model, "atpatch_tokenizer", None)
            if save_tokenizer is not None:  # text victims ship their tokenizer with the weights
                save_tokenizer.save_pretrained(tmp)


if __name__ == "__main__":
    main(stage_params(__doc__))
