"""Errors raised by AtPatch. Every message names the problem: what was expected and what came."""


class AtPatchError(Exception):
    """Base class of every error AtPatch raises on purpose."""


class UnsupportedModelError(AtPatchError):
    """The model cannot expose its attention probabilities to AtPatch."""


class ShapeError(AtPatchError):
    """A tensor had the wrong shape or described a different model."""


class DetectorFileError(AtPatchError):
    """A saved detector is missing, corrupt or inconsistent."""


class DataValidationError(AtPatchError):
    """A data split failed its validation suite."""


def expect_shape(name: str, tensor, expected: tuple) -> None:
    """Raise ShapeError unless `tensor.shape` matches `expected` (None matches any size)."""
    got = tuple(tensor.shape)
    if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got)):
        shown = tuple("*" if e is None else e for e in expected)
        raise ShapeError(f"{name}: expected shape {shown}, got {got}")
