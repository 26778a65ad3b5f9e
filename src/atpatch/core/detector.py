"""The contrastive over-attention detector (docs/method.md).

A position (key token) is described by its column features at each detector layer:
[L, F] with F = heads * len(kinds). A shared MLP encodes each layer's block (plus a learned layer
embedding); a linear head scores each layer and the position's score is the max over layers, so
a trigger needs to stand out in one layer only (the probe saw it in one layer-0 head). The
contrastive loss acts on the position embedding (max-pooled over layers).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from atpatch.core.errors import DetectorFileError, ShapeError
from atpatch.core.features import KINDS, TokenLayout

WEIGHTS_FILE = "detector.safetensors"
CONFIG_FILE = "detector.json"
FORMAT_VERSION = 1


@dataclass
class DetectorConfig:
    """Everything needed to rebuild a detector; saved as JSON next to the weights."""

    layers: list[int]  # model layers whose features the detector reads, ascending
    heads: int
    kinds: list[str]
    model_type: str
    layout: dict = field(default_factory=lambda: TokenLayout().to_dict())
    hidden: int = 64
    embed: int = 32
    proj: int = 32
    temperature: float = 0.1
    contrastive_weight: float = 1.0
    steps: int = 1500
    batch_size: int = 256
    lr: float = 3e-3
    min_std: float = 0.05
    # Image models (a fixed token grid): also give each column its features standardised against clean
    # inputs at the same position (`fit_positions`), so a column stands out against what that position
    # usually receives, wherever a trigger lands. 0: off; else the number of tokens K.
    positions: int = 0
    seed: int = 0
    threshold: float = 0.5  # a position is flagged when its score exceeds it (what users read and set)
    # The same cut on the logit, set by `calibrate`: a very confident detector scores many positions
    # exactly 1.0 in float32, so a threshold on the score alone can tie with them and flag nothing
    # (seen on the text-backdoor victim: threshold 1.0, 0% of triggered inputs flagged). None: logit(threshold).
    logit_threshold: float | None = None
    calibration: dict = field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        """Column features per layer as recorded: heads x kinds."""
        return self.heads * len(self.kinds)

    @property
    def in_dim(self) -> int:
        """What the encoder reads per layer: the recorded features, and their positional z-scores if on."""
        return self.feature_dim * (2 if self.positions else 1)


NETWORK_FIELDS = ("hidden", "embed", "proj", "temperature", "contrastive_weight", "steps", "batch_size", "lr", "min_std")
# Detector settings when none are given (`atpatch patch`, params.yaml's train_detector keys left unset).
DETECTOR_DEFAULTS = {
    "layers": None, "kinds": list(KINDS),
    "network": {**{name: DetectorConfig.__dataclass_fields__[name].default for name in NETWORK_FIELDS},
                "positional": False},
    "calibration_fpr": 0.005, "min_threshold": 0.5,
    # Off by default: a seeded share of the faulty fit inputs held out to bound the threshold from
    # above (Detector.calibrate's `faulty` / `recall`); it costs training data.
    "recall_holdout": 0.0, "calibration_recall": None,
}


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020). z: [N, D] (normalised inside), labels: [N]."""
    z = F.normalize(z, dim=-1)
    sim = z @ z.T / temperature  # [N, N]
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, -torch.inf)
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    positive = (labels[:, None] == labels[None, :]) & ~self_mask
    count = positive.sum(1)
    has = count > 0
    mean_log = torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum(1)[has] / count[has]
    return -mean_log.mean()


class Detector(nn.Module):
    """Scores key positions as over-attended. Use `fit`, `score`, `calibrate`, `save`, `load`."""

    def __init__(self, config: DetectorConfig):
        super().__init__()
        self.config = config
        # The directory `load` read it from (None when built in memory): a shard worker loads the same files.
        self.source_dir: Path | None = None
        n_layers, dim = len(config.layers), config.in_dim
        self.register_buffer("feature_mean", torch.zeros(n_layers, dim))
        self.register_buffer("feature_std", torch.ones(n_layers, dim))
        self.register_buffer("benign", torch.ones(0))  # u[l, h], [model layers, H] once estimated
        k, f = config.positions, config.feature_dim
        self.register_buffer("position_mean", torch.zeros(k, n_layers, f))  # [K, L, F] (empty when off)
        self.register_buffer("position_std", torch.ones(k, n_layers, f))
        self.layer_embedding = nn.Embedding(n_layers, 8)
        self.encoder = nn.Sequential(
            nn.Linear(dim + 8, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.embed), nn.ReLU()
        )
        self.projection = nn.Sequential(nn.Linear(config.embed, config.embed), nn.ReLU(), nn.Linear(config.embed, config.proj))
        self.scorer = nn.Linear(config.embed, 1)

    # -- positional features ------------------------------------------------------------------
    def fit_positions(self, features: torch.Tensor, candidate: torch.Tensor) -> None:
        """Per-position statistics from clean inputs' recorded features [N, K, L, F] (candidate [N, K])."""
        c = self.config
        if features.shape[1] != c.positions:
            raise ShapeError(f"fit_positions: expected {c.positions} tokens, got features {tuple(features.shape)}")
        w = candidate.to(features.dtype)[..., None, None]  # [N, K, 1, 1]
        count = w.sum(0).clamp(min=1.0)
        mean = (features * w).sum(0) / count
        std = (((features - mean) ** 2 * w).sum(0) / count).sqrt()
        self.position_mean.copy_(mean)
        self.position_std.copy_(std.clamp(min=c.min_std))

    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """Recorded features [..., K, L, F] -> the encoder's input [..., K, L, in_dim] (adds positional
        z-scores when `positions` is on; identity otherwise)."""
        if not self.config.positions:
            return features
        self._check_positions(features.shape[-3], features.shape[-1])
        return torch.cat([features, (features - self.position_mean) / self.position_std], dim=-1)

    def _prepare_layer(self, features: torch.Tensor, slot: int) -> torch.Tensor:
        """One detector layer's recorded features [..., K, F] -> [..., K, in_dim]."""
        if not self.config.positions:
            return features
        self._check_positions(features.shape[-2], features.shape[-1])
        z = (features - self.position_mean[:, slot]) / self.position_std[:, slot]
        return torch.cat([features, z], dim=-1)

    def _check_positions(self, k: int, f: int) -> None:
        if f != self.config.feature_dim:
            raise ShapeError(f"features: expected {self.config.feature_dim} recorded features per layer "
                             f"({self.config.heads} heads x kinds {self.config.kinds}), got {f}")
        if k != self.config.positions:
            raise ShapeError(f"features: this detector standardises {self.config.positions} token positions, "
                             f"the input has {k} (positional features need a fixed token grid, e.g. an image model)")

    # -- shapes -------------------------------------------------------------------------------
    def _check(self, features: torch.Tensor, per_layer: bool) -> None:
        c = self.config
        want = (c.in_dim,) if per_layer else (len(c.layers), c.in_dim)
        if tuple(features.shape[-len(want):]) != want:
            raise ShapeError(
                f"features: expected trailing shape {want} (model {c.model_type!r}, layers {c.layers}, "
                f"{c.heads} heads x kinds {c.kinds}), got {tuple(features.shape)}; were they recorded from another model?"
            )

    # -- forward pieces -----------------------------------------------------------------------
    def _embed_layer(self, x: torch.Tensor, slot: int) -> torch.Tensor:
        """x: [..., F] features of detector layer slot -> [..., embed]."""
        x = (x - self.feature_mean[slot]) / self.feature_std[slot]
        emb = self.layer_embedding.weight[slot].expand(*x.shape[:-1], -1)
        return self.encoder(torch.cat([x, emb], dim=-1))

    def _embed(self, features: torch.Tensor) -> torch.Tensor:
        """features: [..., L, F] -> per-layer embeddings [..., L, embed]."""
        return torch.stack([self._embed_layer(features[..., i, :], i) for i in range(len(self.config.layers))], dim=-2)

    def layer_logit(self, features: torch.Tensor, slot: int) -> torch.Tensor:
        """Logit of each position from one detector layer. features: [..., K, F] as recorded -> [..., K]."""
        features = self._prepare_layer(features, slot)
        self._check(features, per_layer=True)
        return self.scorer(self._embed_layer(features, slot)).squeeze(-1)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Position logit = max over detector layers. features: [..., K, L, F] as recorded -> [..., K]."""
        features = self.prepare(features)
        self._check(features, per_layer=False)
        return self.scorer(self._embed(features)).squeeze(-1).amax(-1)

    @torch.no_grad()
    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Over-attention score in [0, 1]. features: [..., L, F] -> [...]."""
        return torch.sigmoid(self.logits(features))

    @property
    def flag_logit(self) -> float:
        """The logit above which a position is flagged."""
        c = self.config
        return c.logit_threshold if c.logit_threshold is not None else _logit(c.threshold)

    def flags(self, logits: torch.Tensor) -> torch.Tensor:
        """Flag decisions (bool, same shape) for position logits from `logits` / `layer_logit`."""
        return logits > self.flag_logit

    def set_threshold(self, threshold: float) -> None:
        """Flag positions whose score exceeds `threshold` (in [0, 1])."""
        self.config.threshold, self.config.logit_threshold = float(threshold), _logit(threshold)

    def slot_of(self, layer: int) -> int | None:
        """Index of model layer `layer` among the detector's layers (None if it reads no features there)."""
        return self.config.layers.index(layer) if layer in self.config.layers else None

    # -- training -----------------------------------------------------------------------------
    def fit(self, features: torch.Tensor, labels: torch.Tensor, progress: bool = True) -> dict:
        """Train on positions. features: [N, L, in_dim] float, i.e. `prepare`d (as recorded unless
        `positions` is on); labels: [N] {0, 1}. Returns last losses."""
        from tqdm.auto import tqdm

        self._check(features, per_layer=False)
        labels = labels.long()
        pos, neg = torch.nonzero(labels == 1).squeeze(1), torch.nonzero(labels == 0).squeeze(1)
        if len(pos) == 0 or len(neg) == 0:
            raise ShapeError(f"fit: need both classes, got {len(pos)} anomalous and {len(neg)} benign positions")
        c = self.config
        gen = torch.Generator().manual_seed(c.seed)
        torch.manual_seed(c.seed)
        self._reset(gen)
        self.feature_mean.copy_(features.mean(0))
        # The floor keeps near-uniform layers (std ~1e-3) from being blown up into spurious signal.
        self.feature_std.copy_(features.std(0).clamp(min=c.min_std))
        opt = torch.optim.AdamW(self.parameters(), lr=c.lr, weight_decay=1e-4)
        half = c.batch_size // 2
        self.train()
        losses = {}
        for _ in tqdm(range(c.steps), desc="detector fit", disable=not progress, leave=False):
            # Balanced batches: anomalous columns are rare (a few per thousand).
            idx = torch.cat([pos[torch.randint(len(pos), (half,), generator=gen)],
                             neg[torch.randint(len(neg), (half,), generator=gen)]])
            x, y = features[idx], labels[idx]
            emb = self._embed(x)  # [n, L, embed]
            logit = self.scorer(emb).squeeze(-1).amax(-1)
            bce = F.binary_cross_entropy_with_logits(logit, y.float())
            loss = bce
            if c.contrastive_weight > 0:
                con = supcon_loss(self.projection(emb.amax(-2)), y, c.temperature)
                loss = bce + c.contrastive_weight * con
                losses["supcon"] = float(con.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses["bce"] = float(bce.detach())
        self.eval()
        return losses

    def _reset(self, gen: torch.Generator) -> None:
        """Re-initialise weights from the detector's own generator (fit is then repeatable)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1 / math.sqrt(module.in_features)
                with torch.no_grad():
                    module.weight.uniform_(-bound, bound, generator=gen)
                    module.bias.uniform_(-bound, bound, generator=gen)
            elif isinstance(module, nn.Embedding):
                with torch.no_grad():
                    module.weight.normal_(generator=gen)

    @torch.no_grad()
    def calibrate(self, features: torch.Tensor, candidate: torch.Tensor, fpr: float = 0.01, min_threshold: float = 0.5,
                  faulty: tuple[torch.Tensor, torch.Tensor] | None = None, recall: float | None = None) -> float:
        """Set the flagging threshold on held-out inputs, per input.

        features: [B, K, L, F] of clean inputs; candidate: [B, K] bool. After this at most
        floor(fpr * B) of these inputs have any candidate position scoring above the threshold.
        The threshold never goes below `min_threshold`.

        faulty: optional (features [M, K, L, F], fault tokens [M, K] bool) of held-out faulty inputs,
        with `recall` the share of them that must keep a flag on a fault token. When the clean bound
        (the FPR cut) lies below the highest cut that keeps this recall, the threshold goes to the
        middle of the gap, in logits: a detector whose clean and faulty logits are far apart then
        does not sit at the very edge of the clean calibration inputs, where a handful of clean
        inputs decides the test false-flag rate. Without a gap the FPR cut stands.
        """
        per_input = self._input_logits(features, candidate).sort(descending=True).values  # [B]
        allowed = int(math.floor(fpr * len(per_input)))
        cut = float(per_input[allowed]) if allowed < len(per_input) else -math.inf
        low = max(cut, _logit(min_threshold))
        info = {"fpr_target": fpr, "inputs": len(per_input), "min_threshold": min_threshold, "fpr_cut_logit": low}
        threshold = low
        faulty_logits = self._input_logits(*faulty) if faulty is not None and len(faulty[0]) else None
        if faulty_logits is not None and recall is not None:
            high = _recall_cut(faulty_logits, recall)
            info.update(recall_target=recall, recall_inputs=len(faulty_logits), recall_cut_logit=high)
            threshold = (low + high) / 2 if high > low else low
        self.config.logit_threshold = threshold
        self.config.threshold = float(torch.sigmoid(torch.tensor(threshold)))
        info["flagged_rate"] = float(self.flags(per_input).double().mean())
        if faulty_logits is not None:
            info["faulty_flagged_rate"] = float(self.flags(faulty_logits).double().mean())
        self.config.calibration = info
        return self.config.threshold

    def _input_logits(self, features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Per input, the highest logit among `positions` [B, K] (-inf if none); on logits because
        scores saturate at 1.0 and would tie (see logit_threshold)."""
        return self.logits(features).masked_fill(~positions.bool(), -torch.inf).amax(-1)

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write detector.safetensors + detector.json into `directory` (no pickle)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_FILE))
        meta = {"format_version": FORMAT_VERSION, **asdict(self.config)}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: str | Path) -> "Detector":
        """Load a detector saved by `save`; raises DetectorFileError naming what is wrong."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = _read_config(directory / CONFIG_FILE)
        try:
            state = load_file(str(directory / WEIGHTS_FILE))
        except FileNotFoundError as exc:
            raise DetectorFileError(f"{directory / WEIGHTS_FILE}: file not found") from exc
        except Exception as exc:  # safetensors raises its own error type for corrupt headers
            raise DetectorFileError(f"{directory / WEIGHTS_FILE}: not a readable safetensors file ({exc})") from exc
        detector = cls(config)
        detector.benign = torch.empty_like(state.get("benign", torch.ones(0)))
        try:
            detector.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise DetectorFileError(f"{directory / WEIGHTS_FILE}: weights do not match {CONFIG_FILE} ({exc})") from exc
        detector.source_dir = directory.resolve()
        return detector.eval()


def _read_config(path: Path) -> DetectorConfig:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DetectorFileError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise DetectorFileError(f"{path}: not valid JSON ({exc})") from exc
    if raw.pop("format_version", None) != FORMAT_VERSION:
        raise DetectorFileError(f"{path}: field format_version: expected {FORMAT_VERSION}")
    known = set(DetectorConfig.__dataclass_fields__)
    missing = {"layers", "heads", "kinds", "model_type"} - set(raw)
    if missing or set(raw) - known:
        raise DetectorFileError(f"{path}: missing fields {sorted(missing)}, unknown fields {sorted(set(raw) - known)}")
    return DetectorConfig(**raw)


def _recall_cut(faulty_logits: torch.Tensor, recall: float) -> float:
    """The highest logit cut that still flags >= `recall` of the faulty inputs (their per-input logits)."""
    ascending = faulty_logits.sort().values
    missed = int(math.floor((1.0 - recall) * len(ascending)))  # inputs allowed to go unflagged
    return float(ascending[missed]) if missed < len(ascending) else math.inf


def _logit(p: float) -> float:
    """log(p / (1 - p)), +-inf at the ends."""
    p = float(p)
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))
