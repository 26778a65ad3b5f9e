"""Victim recipes the mechanics tests share (deep-merged over a scenario's small-profile section)."""

from atpatch.io import deep_merge

# A one-layer vision victim that learns the backdoor in seconds (ASR ~0.99 on 6,000 images, poison 0.2):
# for tests of mechanics (faults, baselines, the mediation verdict), not the small profile's own
# attention-borne victim, which takes minutes.
CHEAP_VISION = {"generate": {"poison_rate": 0.2, "train_limit": 6000},
                "train_victim": {"architecture": {"hidden_size": 32, "layers": 1, "heads": 4, "intermediate_size": 64},
                                 "batch_size": 32, "lr": 0.003}}


def cheap_vision(scenario: str, section: dict | None = None) -> dict:
    """Params overrides: the cheap vision victim for `scenario`, then `section` over it."""
    return {"scenarios": {scenario: deep_merge(CHEAP_VISION, section)}}


# The small profile's tabular-fairness cut to the bone, for tests of a sweep's mechanics: the whole
# pipeline in about a minute on one thread (most of it the eight stages' start-up). Its victim must
# still be unfair enough for the debugging set to hold faults under seeds 0 and 1 (8,000 rows at the
# small profile's 4 epochs; with 3 epochs seed 1 held none).
CHEAP_TABULAR = {"generate": {"limit": 8000}, "train_detector": {"network": {"steps": 50}},
                 "evaluate": {"bootstrap": 0, "latency_repeats": 1, "modes": ["two-pass"]}}
