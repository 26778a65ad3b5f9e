"""median_latencies: every repeat times each function once, on the same batch, in a fixed order."""

import torch

from atpatch.eval.evaluation import median_latencies


def test_round_robin_on_the_same_batches():
    calls = []

    def recorder(name):
        return lambda **inputs: calls.append((name, int(inputs["x"][0])))

    inputs = {"x": torch.arange(10)}
    out = median_latencies({"plain": recorder("plain"), "patched": recorder("patched")}, inputs, batch=4, repeats=3)
    assert set(out) == {"plain", "patched"} and all(v >= 0 for v in out.values())
    # A warm-up call each, then per repeat both on one full batch (rows 0-3, 4-7, then 0-3 again).
    assert calls == [("plain", 0), ("patched", 0),
                     ("plain", 0), ("patched", 0), ("plain", 4), ("patched", 4), ("plain", 0), ("patched", 0)]
