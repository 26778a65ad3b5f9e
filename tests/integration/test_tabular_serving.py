"""Served tabular rows are checked against what the victim saw in training (categories and numeric
ranges saved in its config): a bad row is a 400 naming the column, the value and what is allowed,
through MLflow's scoring app in process (the code the server runs) and through predict itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from atpatch.scenarios.data import adult


def _train_frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = {c: rng.integers(17, 91, n) for c in adult.FEATURE_NUMERIC}
    frame.update({c: np.array([f"{c}-a", f"{c}-b"] * (n // 2), dtype=object) for c in adult.FEATURE_CATEGORICAL})
    frame["sex"] = np.array(["Female", "Male"] * (n // 2), dtype=object)
    return pd.DataFrame(frame)


@pytest.fixture(scope="module")
def victim_dir(tmp_path_factory):
    from atpatch.scenarios.models.tabular import build_feature_token_model

    path = tmp_path_factory.mktemp("tabular") / "victim"
    build_feature_token_model(_train_frame(), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=8).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(victim_dir):
    from atpatch.ops.serving.pyfunc_model import Unpatched

    return Unpatched(victim_dir)


@pytest.fixture(scope="module")
def client(model):
    """MLflow's scoring app around the pyfunc's predict on the tiny tabular victim."""
    from mlflow.models import Model
    from mlflow.pyfunc import PyFuncModel, scoring_server
    from starlette.testclient import TestClient

    from atpatch.ops.serving.pyfunc_model import predict_frame

    class Impl:
        def predict(self, data, params=None):
            return predict_frame(model, "tabular", data)

    with TestClient(scoring_server.init(PyFuncModel(Model(), Impl())), raise_server_exceptions=False) as c:
        yield c


def _rows(**change) -> pd.DataFrame:
    return _train_frame().iloc[:2][list(adult.FEATURE_CATEGORICAL + adult.FEATURE_NUMERIC)].assign(**change)


def _post(client, frame: pd.DataFrame):
    body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.astype(object).values.tolist()}}
    return client.post("/invocations", json=body)


def test_valid_rows_are_answered(client):
    r = _post(client, _rows())
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2


def test_an_unknown_category_is_a_400_naming_column_value_and_categories(client):
    r = _post(client, _rows(sex=["Male", "Robot"]))
    assert r.status_code == 400, r.text
    msg = r.json()["message"]
    assert "input column 'sex', row 1" in msg and "'Robot'" in msg and "'Female', 'Male'" in msg


def test_a_number_out_of_the_training_range_is_a_400_naming_column_value_and_range(client, model):
    r = _post(client, _rows(age=[30, -5]))
    assert r.status_code == 400, r.text
    msg = r.json()["message"]
    low, high = model.model.config.num_min[0], model.model.config.num_max[0]
    assert "input column 'age', row 1" in msg and "got -5" in msg and f"[{low:g}, {high:g}]" in msg


def test_predict_raises_the_same_clear_error(model):
    from atpatch.ops.serving.pyfunc_model import InvalidInput, predict_frame

    with pytest.raises(InvalidInput, match=r"input column 'sex', row 0: got 'Robot'"):
        predict_frame(model, "tabular", _rows(sex=["Robot", "Male"]))
    with pytest.raises(InvalidInput, match=r"input column 'age', row 0: got 500"):
        predict_frame(model, "tabular", _rows(age=[500, 30]))


def test_the_range_is_the_training_datas(model):
    train = _train_frame()
    config = model.model.config
    assert config.num_min == [float(train[c].min()) for c in config.numeric]
    assert config.num_max == [float(train[c].max()) for c in config.numeric]
