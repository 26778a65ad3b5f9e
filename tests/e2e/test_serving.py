"""The registered patch served for real: `mlflow models serve` on loopback, a tiny patch in a temp store.

Answers must equal the in-process patched model's; every kind of bad request gets a 400 (415 for a
wrong content type) whose message names the problem, and the server keeps answering; a hypothesis
fuzz of the request decoding (MLflow's scoring app in process, the same code the server runs) never
meets an unhandled error. The fuzz counts are printed (`-s`; deterministic: hypothesis runs
derandomized); no test writes into the repository.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from atpatch.core.errors import AtPatchError

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAME = "atpatch-serving-test"
MAX_BATCH = 64
FUZZ_CASES = {"app": 250, "validate_frame": 600}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny patch registered as NAME@challenger in a temp MLflow store (env pointed at it)."""
    from tiny_patch import register_tiny

    root = tmp_path_factory.mktemp("serving")
    env = {"ATPATCH_ROOT": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        parts = register_tiny(root / "tiny", NAME, "challenger", max_batch=MAX_BATCH)
        yield {"root": root, "env": env, **parts}


@pytest.fixture(scope="module")
def server(store):
    """`mlflow models serve` as a subprocess; yields its base URL; killed (process group) at the end."""
    from atpatch.ops.serving.server import start_server, stop_server

    try:
        proc, url = start_server(f"models:/{NAME}@challenger", store["env"], store["root"] / "server.log", timeout=150)
    except AtPatchError as exc:
        pytest.fail(str(exc))
    try:
        yield url
    finally:
        stop_server(proc)


def _post(url: str, body, content_type: str = "application/json"):
    import requests

    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(f"{url}/invocations", data=data, headers={"Content-Type": content_type}, timeout=60)


def _split(rows: list) -> dict:
    return {"dataframe_split": {"columns": ["image"], "data": [[r] for r in rows]}}


def _pixels(images: np.ndarray) -> list[list[int]]:
    return [img.reshape(-1).astype(int).tolist() for img in images]


def test_answers_match_in_process_model(store, server):
    from atpatch.scenarios.models.vit import to_pixel_values
    from atpatch.ops.serving.pyfunc_model import build_patched
    from tiny_patch import tiny_images

    clean, _ = tiny_images(6, seed=11)
    triggered, labels = tiny_images(6, seed=12, triggered=True)
    images = np.concatenate([clean, triggered])
    response = _post(server, _split(_pixels(images)))
    assert response.status_code == 200, response.text
    answers = response.json()["predictions"]
    assert len(answers) == len(images) and set(answers[0]) == {"label", "probabilities", "flagged"}

    patched = build_patched(store["victim"], store["detector"], store["config"])
    ref = patched(pixel_values=to_pixel_values(images))
    ref_probs = torch.softmax(ref.logits, -1).numpy()
    assert [a["label"] for a in answers] == ref.logits.argmax(-1).tolist()
    np.testing.assert_allclose(np.array([a["probabilities"] for a in answers]), ref_probs, rtol=0, atol=1e-6)
    assert [a["flagged"] for a in answers] == [torch.nonzero(r).flatten().tolist() for r in ref.flagged]
    # Clean inputs pass through unflagged; triggered ones are flagged at the trigger's patch.
    assert all(a["flagged"] == [] for a in answers[:6])
    hits = [a["flagged"] for a in answers[6:]]
    assert sum(bool(f) for f in hits) >= 3, hits
    trigger_pos = [int(np.flatnonzero(row)[0]) for row in labels]
    assert all(f == [] or f == [p] for f, p in zip(hits, trigger_pos)), (hits, trigger_pos)
    # Other request formats give the same answers.
    records = _post(server, {"dataframe_records": [{"image": p} for p in _pixels(images[:2])]})
    nested = _post(server, _split([img.astype(int).tolist() for img in images[:2]]))  # 28x28 lists
    for other in (records, nested):
        assert other.status_code == 200, other.text
        assert [a["label"] for a in other.json()["predictions"]] == [a["label"] for a in answers[:2]]


GOOD = [0] * 784
BAD_REQUESTS = {
    "malformed JSON": ('{"dataframe_split": {"columns": ["image"], "data": [[', "valid JSON"),
    "wrong top-level field": ({"dataframe": {"columns": ["image"], "data": [[GOOD]]}}, "input fields"),
    "wrong column name": ({"dataframe_split": {"columns": ["pixels"], "data": [[GOOD]]}}, "missing inputs ['image']"),
    "too few values": (_split([GOOD[:-1]]), "row 0: expected 784 values (a flattened 28x28 image), got 783"),
    "over-long row": (_split([GOOD, GOOD * 10]), "row 1: expected 784 values (a flattened 28x28 image), got 7840"),
    "wrong 2-D shape": (_split([[[0] * 28] * 27]), "got 756"),
    "strings": (_split([["a"] * 784]), "non-numeric"),
    "scalar row": (_split([7]), "row 0: expected a list of 784 integers 0..255, got 7"),
    "null row": (_split([None]), "got None"),
    "booleans": (_split([[True] * 784]), "got booleans"),
    "non-integer": (_split([[0.5] + GOOD[1:]]), "expected integers in 0..255, got 0.5 at pixel 0"),
    "out of range": (_split([GOOD[:9] + [256] + GOOD[10:]]), "expected integers in 0..255, got 256 at pixel 9"),
    "NaN": ('{"dataframe_split": {"columns": ["image"], "data": [[[0, NaN' + ", 0" * 782 + "]]]}}",
            "row 0: NaN at pixel 1"),
    "infinity": ('{"dataframe_records": [{"image": [' + "0, " * 783 + "-Infinity]}]}",
                 "row 0: infinite value at pixel 783"),
    "empty input": ({"dataframe_split": {"columns": ["image"], "data": []}}, "input: empty"),
    "oversized batch": (_split([GOOD] * (MAX_BATCH + 1)), f"{MAX_BATCH + 1} rows, more than this model's max_batch"),
    "not UTF-8": (b'{"dataframe_split": "\xff\xfe"}', "valid JSON"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_400_naming_the_problem_and_server_keeps_serving(server, case):
    body, expected = BAD_REQUESTS[case]
    response = _post(server, body)
    assert response.status_code == 400, (case, response.status_code, response.text[:500])
    error = response.json()
    assert error["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")
    assert expected in error["message"], (case, error["message"][-500:])
    after = _post(server, _split([GOOD]))
    assert after.status_code == 200 and len(after.json()["predictions"]) == 1


def test_wrong_content_type_gets_415(server):
    response = _post(server, "image=0,0,0", content_type="text/plain")
    assert response.status_code == 415 and "content types" in response.text
    assert _post(server, _split([GOOD])).status_code == 200


# -- fuzz ------------------------------------------------------------------------------------------
def _strategies():
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
               | st.text(max_size=4))
    anything = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c,
                                                                                            max_size=3), max_leaves=12)
    pixel = st.integers(-3, 258) | st.floats(allow_nan=True, allow_infinity=True) | scalars

    @st.composite
    def image(draw):
        """A valid image, or one mutated: truncated/extended, a pixel replaced, nested, or replaced whole."""
        base = (draw(st.lists(st.integers(0, 255), min_size=1, max_size=8)) * 784)[:784]
        kind = draw(st.sampled_from(["valid"] * 5 + ["nested", "cut", "extend", "pixel", "replace"]))
        if kind == "nested":
            return [base[i:i + 28] for i in range(0, 784, 28)]
        if kind == "cut":
            return base[: draw(st.integers(0, 783))]
        if kind == "extend":
            return base + draw(st.lists(st.integers(0, 255), min_size=1, max_size=5))
        if kind == "pixel":
            base[draw(st.integers(0, 783))] = draw(pixel)
        if kind == "replace":
            return draw(anything)
        return base

    columns = st.just(["image"]) | st.lists(st.sampled_from(["image", "pixels", "", "label"]), max_size=2)
    split = st.builds(lambda cols, rows: {"dataframe_split": {"columns": cols, "data": rows}}, columns,
                      st.lists(st.lists(image(), min_size=1, max_size=2), max_size=3) | anything)
    records = st.builds(lambda rows: {"dataframe_records": rows},
                        st.lists((st.fixed_dictionaries({"image": image()}) | st.dictionaries(st.sampled_from(["image", "x"]), image(), max_size=2)), max_size=3)
                        | anything)
    inputs = st.builds(lambda key, rows: {key: rows}, st.sampled_from(["inputs", "instances"]),
                       st.dictionaries(st.sampled_from(["image", "x"]), st.lists(image(), max_size=2), max_size=2)
                       | st.lists(st.fixed_dictionaries({"image": image()}), max_size=2) | anything)
    payload = split | records | inputs | st.dictionaries(st.text(max_size=6), anything, max_size=2) | anything
    body = (payload.map(lambda p: json.dumps(p, allow_nan=True))
            | st.text(max_size=30) | st.binary(max_size=30)
            | payload.map(lambda p: json.dumps(p, allow_nan=True)).flatmap(
                lambda s: st.integers(0, max(len(s) - 1, 0)).map(lambda i: s[:i])))  # truncated JSON
    return {"body": body, "image": image, "anything": anything, "columns": columns}


@pytest.fixture(scope="module")
def app_client(store):
    import mlflow
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    from atpatch.ops.tracking import configure

    configure()
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@challenger")
    with TestClient(scoring_server.init(model), raise_server_exceptions=False) as client:
        yield client


def test_fuzz_request_decoding_in_scoring_app(app_client):
    """Arbitrary bodies through MLflow's scoring app (the served code path, in process): 200 with one
    well-formed answer per row, or a 4xx carrying a message; never a 500."""
    from hypothesis import HealthCheck, given, settings

    counts = {"cases": 0, "ok": 0, "rejected": 0}

    @settings(max_examples=FUZZ_CASES["app"], derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_strategies()["body"])
    def run(body):
        counts["cases"] += 1
        r = app_client.post("/invocations", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code in (200, 400), (r.status_code, r.text[:300], body[:200])
        if r.status_code == 400:
            counts["rejected"] += 1
            error = r.json()
            assert error["error_code"] in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST") and error["message"]
        else:
            counts["ok"] += 1
            for answer in r.json()["predictions"]:
                assert 0 <= answer["label"] < 10 and math.isclose(sum(answer["probabilities"]), 1, abs_tol=1e-5)
                assert all(0 < p < 50 for p in answer["flagged"])

    run()
    print(f"\nfuzz (scoring app): {counts}")
    assert counts["ok"] > 0 and counts["rejected"] > 0


def test_fuzz_validate_frame():
    """The pyfunc's request checks on arbitrary column values: decoded uint8 images or InvalidInput."""
    import pandas as pd
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from atpatch.ops.serving.pyfunc_model import InvalidInput, validate_frame

    s = _strategies()
    counts = {"cases": 0, "ok": 0, "rejected": 0}

    @settings(max_examples=FUZZ_CASES["validate_frame"], derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(s["columns"], st.lists(st.lists(s["image"](), min_size=0, max_size=2), max_size=4) | s["anything"])
    def run(columns, rows):
        counts["cases"] += 1
        try:
            frame = pd.DataFrame(rows, columns=columns or None) if isinstance(rows, list) else rows
        except (ValueError, TypeError, AssertionError):
            frame = rows  # pandas refused: hand the raw value over
        try:
            images = validate_frame(frame, "image", max_batch=3)
        except InvalidInput as exc:
            counts["rejected"] += 1
            assert exc.error_code == "INVALID_PARAMETER_VALUE" and str(exc)
            return
        counts["ok"] += 1
        assert images.dtype == np.uint8 and images.shape[1:] == (28, 28) and 1 <= len(images) <= 3

    run()
    print(f"\nfuzz (validate_frame): {counts}")
    assert counts["ok"] > 0 and counts["rejected"] > 0
