"""Which stored suites guard which stage boundary, with which suite parameters.

raw data (stage generate, as it reads each source): raw.images | raw.adult | raw.compas | raw.reviews
generated splits (stage generate, before writing): generated.images[.<split>] | generated.tables [+ generated.texts]
extracted features (stage extract, before writing): features
metrics (stage evaluate, before writing evaluate.json): metrics

Every check renders its Data Docs into `reports/data_docs/<scenario>/<stage>/` under the project
root (`docs_dir`) and raises DataValidationError (one line) on a failure, before the stage writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from atpatch.conventions import data_docs_index
from atpatch.scenarios.frames import features_frame, metrics_frame, raw_image_frame, split_frame, table_frame
from atpatch.scenarios.validation import rendered, validate

NUM_CLASSES = 10  # Fashion-MNIST
RAW_TABLE_SUITES = {"adult": "raw.adult", "compas": "raw.compas"}  # tabular data set -> its raw schema
# The suites each stage runs (dvc.yaml declares their files as the stage's deps).
STAGE_SUITES = {
    "generate": ("raw.images", *RAW_TABLE_SUITES.values(), "raw.reviews", "generated.images", "generated.images.train",
                 "generated.images.test_triggered", "generated.images.debug", "generated.tables", "generated.texts"),
    "extract": ("features",),
    "evaluate": ("metrics",),
}


def docs_dir(params: Mapping, stage: str, root: str | Path = ".") -> Path:
    """Where `stage`'s Data Docs go for the params' scenario."""
    return (Path(root) / data_docs_index(params["scenario"], stage)).parent


# ---------------------------------------------------------------- raw data


def raw_images(name: str, images: np.ndarray, labels: np.ndarray, image_size: int, docs: Path) -> None:
    validate(name, raw_image_frame(images, labels), ["raw.images"],
             {"labels": list(range(NUM_CLASSES)), "image_size": image_size}, docs)


def raw_table(name: str, frame, dataset: str, docs: Path, min_rows: int = 1) -> None:
    validate(name, frame, [RAW_TABLE_SUITES[dataset]], {"min_rows": min_rows}, docs)


def raw_reviews(name: str, frame, docs: Path, min_rows: int = 1) -> None:
    validate(name, frame, ["raw.reviews"], {"min_rows": min_rows}, docs)


# ---------------------------------------------------------------- generated splits


def image_splits(where: str, splits: Mapping[str, Mapping[str, np.ndarray]], g: Mapping, image_size: int,
                 docs: Path) -> None:
    """Every image split (to be written to folder `where`): the common suite and the split's own."""
    spec = {"size": g["trigger"]["size"], "patch_size": g["patch_size"], "image_size": image_size,
            "min_overlap": (g.get("debug") or {}).get("min_overlap", 1), "whole_image": g["trigger"]["kind"] == "blend"}
    with rendered(docs):  # Data Docs once for all splits
        for name, cols in splits.items():
            _image_split(f"{where}/{name}", name, dict(cols), g, spec)


def _image_split(path: str, name: str, cols: dict, g: Mapping, spec: Mapping) -> None:
    """One image split: the common suite and the split's own (no Data Docs: image_splits renders them)."""
    if name == "train":
        # Poisoned rows must carry the target label.
        cols["poison_label_ok"] = ~cols["poisoned"] | (cols["label"] == g["target_label"])
    df = split_frame(cols, spec if name == "debug" else None)
    tol = 1.0 / len(df)  # round(rate * N) / N is within 0.5 / N of the rate
    params = {"labels": list(range(NUM_CLASSES)), "target_labels": [g["target_label"]],
              "poison_rate_min": g.get("poison_rate", 0) - tol, "poison_rate_max": g.get("poison_rate", 0) + tol}
    own = [f"generated.images.{name}"] if name != "test_clean" else []
    validate(path, df, ["generated.images", *own], params)


def table_splits(where: str, splits: Mapping, docs: Path, known: Mapping | None = None, min_rows: int = 1,
                 text: bool = False) -> None:
    """Every table (or, with `text`, review) split to be written to folder `where`; `known`: column ->
    the values it may take."""
    suites = ["generated.tables", *(["generated.texts"] if text else [])]
    with rendered(docs):  # Data Docs once for all splits
        for name, frame in splits.items():
            frame = frame[[c for c in frame.columns if c != "spans"]]  # spans may be empty lists: not "null"
            validate(f"{where}/{name}", table_frame(frame, known or {}), suites, {"min_rows": min_rows})


# ---------------------------------------------------------------- features and metrics


def features(name: str, tensors: Mapping, n_layers: int, n_features: int, docs: Path) -> None:
    """Stage extract's tensors: finite, both classes present, [N, K, n_layers, n_features] with K the
    token count of the debugging inputs."""
    params = {"n_columns": int(tensors["token_labels"].shape[1]), "n_layers": n_layers, "n_features": n_features}
    validate(name, features_frame(tensors), ["features"], params, docs)


def metrics(name: str, report: Mapping, docs: Path) -> None:
    validate(name, metrics_frame(report), ["metrics"], docs=docs, id_column="metric")
