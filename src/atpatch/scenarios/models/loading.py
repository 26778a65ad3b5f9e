"""Load a Hugging Face checkpoint directory safely: safetensors weights only, never pickle."""

from __future__ import annotations

from pathlib import Path

from atpatch.core.errors import AtPatchError

PICKLE_WEIGHTS = ("pytorch_model.bin", "tf_model.h5", "model.ckpt.index", "flax_model.msgpack")


def load_classifier(directory: str | Path, attn_implementation: str = "eager"):
    """Load an image or sequence classifier saved with `save_pretrained`.

    Refuses directories whose weights are not safetensors (a pickle file can run code on load).
    """
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    from atpatch.scenarios.models import tabular  # noqa: F401  registers the feature-token model type with the Auto classes

    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise AtPatchError(f"{directory}: no config.json; expected a save_pretrained model directory")
    if not any(directory.glob("*.safetensors")):
        found = [p.name for p in directory.iterdir() if p.name in PICKLE_WEIGHTS]
        raise AtPatchError(f"{directory}: no .safetensors weights (found {found or 'none'}); AtPatch refuses "
                           "pickle-based weights. Re-save the model with save_pretrained(safe_serialization=True).")
    config = AutoConfig.from_pretrained(directory)
    auto = AutoModelForImageClassification if config.model_type in ("vit", "deit") else AutoModelForSequenceClassification
    model = auto.from_pretrained(directory, use_safetensors=True, attn_implementation=attn_implementation)
    return model.eval()
