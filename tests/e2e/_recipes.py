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
