"""Stage `extract`: record attention column features of the victim on the debugging set.

Writes one safetensors file: features [N, K, L, F], token_labels [N, K], candidate [N, K],
triggered [N] (inputs with a fault), calib [N] (the held-out clean calibration part).
For fairness scenarios the token labels come from counterfactual testing of the victim.
The tensors are checked (stored suite `features`: finite, shapes, inputs with and without a fault)
before the file is written: a failure leaves the previous file in place.
"""

from __future__ import annotations

import json

from atpatch.io import safetensors_bytes, write_bytes_atomic
from atpatch.scenarios.models.loading import load_classifier
from atpatch.ops.patching import extract_features
from atpatch.scenarios import checks, kind_module, pin_threads, stage_params


def main(params: dict) -> None:
    p, kind = params["extract"], kind_module(params)
    pin_threads(params)
    model = load_classifier(params["train_victim"]["out"])
    debug = kind.debug_set(params, model)
    layout = kind.layout(model, params)
    features, candidate = extract_features(model, debug["inputs"], layout, p["batch_size"], tuple(p["kinds"]))
    tensors = {"features": features.contiguous(), "candidate": candidate,
               **{k: debug[k] for k in ("token_labels", "triggered", "calib")}}
    heads = model.config.num_attention_heads
    checks.features(p["out"], tensors, model.config.num_hidden_layers, heads * len(p["kinds"]),
                    checks.docs_dir(params, "extract"))
    # What the detector stage needs to know about the victim, without loading it again.
    meta = {"kinds": ",".join(p["kinds"]), "heads": str(heads),
            "model_type": model.config.model_type, "layout": json.dumps(layout.to_dict())}
    write_bytes_atomic(p["out"], safetensors_bytes(tensors, meta))
    print(f"features {tuple(features.shape)}, {int(debug['triggered'].sum())} inputs with faults -> {p['out']}")


if __name__ == "__main__":
    main(stage_params(__doc__))
