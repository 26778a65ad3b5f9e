"""Fairlearn's ThresholdOptimizer (Hardt, Price and Srebro, 2016) as post-processing around the victim.

The victim's positive-class probability is the one feature of a fitted scikit-learn classifier
(`ScoreColumn`, predict_proba = [1 - s, s]) handed to `fairlearn.postprocessing.ThresholdOptimizer(prefit=True,
predict_method="predict_proba")`, which is fitted on the clean repair set with its labels and
sensitive feature: it picks group-specific (randomised) thresholds on the victim's positive-class
probability under `constraints` (demographic_parity | equalized_odds | ...), maximising `objective`.

It needs the sensitive feature of every input at prediction time, `predict(inputs, sensitive=...)`,
and refuses without it; AtPatch does not need it. Binary classifiers only (label 1 = positive).
Predictions are randomised between two thresholds per group; `random_state` is the seed.

Uses: clean_inputs, clean_labels, sensitive.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from atpatch.core.errors import AtPatchError, ShapeError
from atpatch.eval.evaluation import Inputs, n_rows
from atpatch.baselines import Defended, Timer, as_labels, logits_of, merged, need

NAME = "threshold_optimizer"
USES = ("clean_inputs", "clean_labels", "sensitive")
DEFAULTS = {
    "constraints": "demographic_parity",  # demographic_parity | equalized_odds | true_positive_rate_parity | ...
    "objective": "accuracy_score",
    "grid_size": 1000,
    "flip": False,
    "batch_size": 1024,
}


class ScoreColumn(ClassifierMixin, BaseEstimator):
    """A fitted sklearn binary classifier whose X is one column: the victim's P(label 1).

    The victim is run once per batch of inputs (`positive_scores`) and ThresholdOptimizer thresholds
    its score; passing the score instead of flattened tensors keeps variable-length text inputs simple.
    """

    classes_ = np.array([0, 1])

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X, y=None):
        """Nothing to fit: the victim is already trained (prefit=True never calls this)."""
        return self

    def predict_proba(self, X) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64)[:, 0]
        return np.stack([1.0 - s, s], axis=1)

    def predict(self, X) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64)[:, 0] > 0.5).astype(np.int64)


def positive_scores(model, inputs: Inputs, batch: int) -> np.ndarray:
    """X [N, 1]: the victim's probability of label 1."""
    return logits_of(model, inputs, batch).softmax(-1)[:, 1:2].double().numpy()


def apply(model, repair: dict, params: dict | None = None, seed: int = 0) -> Defended:
    from fairlearn.postprocessing import ThresholdOptimizer

    p = merged(DEFAULTS, params)
    clean, labels, sensitive = need(repair, "clean_inputs", "clean_labels", "sensitive", method=NAME)
    if model.config.num_labels != 2:
        raise AtPatchError(f"{NAME}: ThresholdOptimizer needs a binary classifier, the model has "
                           f"{model.config.num_labels} labels")
    sensitive = np.asarray(sensitive)
    if len(sensitive) != n_rows(clean):
        raise ShapeError(f"{NAME}: sensitive has {len(sensitive)} rows, clean_inputs {n_rows(clean)}")
    model.eval()
    with Timer() as timer:
        optimizer = ThresholdOptimizer(estimator=ScoreColumn(), constraints=p["constraints"], objective=p["objective"],
                                       grid_size=p["grid_size"], flip=p["flip"], prefit=True,
                                       predict_method="predict_proba")
        optimizer.fit(positive_scores(model, clean, p["batch_size"]), as_labels(labels).numpy(), sensitive_features=sensitive)
    thresholds = {str(g): {k: (float(v) if isinstance(v, (int, float, np.floating)) else str(v))
                           for k, v in (t if isinstance(t, dict) else {"rule": t}).items()}
                  for g, t in optimizer.interpolated_thresholder_.interpolation_dict.items()}
    changes = {"constraints": p["constraints"], "objective": p["objective"], "groups": thresholds,
               "needs_sensitive_at_predict": True, "params": p}

    def predict(inputs: Inputs, sensitive=None) -> np.ndarray:
        sensitive = np.asarray(sensitive)
        if len(sensitive) != n_rows(inputs):
            raise ShapeError(f"{NAME}: sensitive has {len(sensitive)} rows, inputs {n_rows(inputs)}")
        X = positive_scores(model, inputs, p["batch_size"])
        return np.asarray(optimizer.predict(X, sensitive_features=sensitive, random_state=seed)).astype(np.int64)

    return Defended(NAME, predict, timer.seconds, changes, model, needs_sensitive=True)
