import torch

from atpatch.scenarios.training import class_weights, train_classifier


def test_balanced_weights_make_each_class_weigh_the_same():
    labels = torch.tensor([0] * 30 + [1] * 70)
    w = class_weights(labels, "balanced")
    counts = torch.bincount(labels).float()
    assert torch.allclose(w * counts, torch.full((2,), 50.0))
    assert class_weights(labels, None) is None


class _Logits(torch.nn.Module):
    """A bias-only classifier: what it learns is the loss's class balance, nothing else."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x, labels=None):
        logits = self.bias.expand(len(x), 2)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return type("Out", (), {"logits": logits, "loss": loss})()


def _fit(mode):
    model = _Logits()
    p = {"epochs": 30, "batch_size": 100, "lr": 0.5, "schedule": "constant", "class_weight": mode}
    train_classifier(model, {"x": torch.zeros(100, 1)}, torch.tensor([0] * 20 + [1] * 80), p, seed=0)
    return model.bias.detach()


def test_balanced_loss_removes_the_majority_class_prior():
    plain, balanced = _fit(None), _fit("balanced")
    assert plain[1] - plain[0] > 1.0                  # unweighted: the prior log(80/20) = 1.39
    assert abs(float(balanced[1] - balanced[0])) < 0.1  # balanced: no preference left
