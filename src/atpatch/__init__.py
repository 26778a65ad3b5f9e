"""AtPatch: an inference-time hot fix for over-attention in transformer classifiers.

Typical use::

    from atpatch import Detector, PatchedClassifier
    detector = Detector.load("data/vision/detector")
    patched = PatchedClassifier(model, detector, mode="two-pass")
    out = patched(pixel_values=x)       # out.logits [B, C], out.flagged [B, K]
"""

from atpatch.core.detector import Detector, DetectorConfig, supcon_loss
from atpatch.core.errors import AtPatchError, DataValidationError, DetectorFileError, ShapeError, UnsupportedModelError
from atpatch.core.features import KINDS, Recorder, TokenLayout, column_features, model_output, record, select_kind
from atpatch.core.patch import benign_attention, redistribute
from atpatch.core.patched import PatchedClassifier, PatchedOutput
from atpatch.core.seam import ATTENTION_MODULES, attention_layers, attention_seam

__all__ = [
    "ATTENTION_MODULES", "AtPatchError", "DataValidationError", "Detector", "DetectorConfig",
    "DetectorFileError", "KINDS", "PatchedClassifier", "PatchedOutput", "Recorder", "ShapeError",
    "TokenLayout", "UnsupportedModelError", "attention_layers", "attention_seam", "benign_attention",
    "column_features", "model_output", "record", "select_kind", "redistribute", "supcon_loss",
]
__version__ = "0.1.0"
