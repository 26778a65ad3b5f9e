"""Redistribution math on random attention maps."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atpatch.core.errors import ShapeError
from atpatch.core.patch import benign_attention, redistribute


def random_maps(seed: int, b: int, h: int, k: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax maps with padding: padded key columns and padded query rows are 0."""
    gen = torch.Generator().manual_seed(seed)
    valid = torch.zeros(b, k, dtype=torch.bool)
    for i, n in enumerate(lengths):
        valid[i, :n] = True
    logits = torch.randn(b, h, k, k, generator=gen) * 3
    logits = logits.masked_fill(~valid[:, None, None, :], -torch.inf)
    probs = torch.softmax(logits, -1) * valid[:, None, :, None]
    return probs, valid


def check_rows(patched: torch.Tensor, valid: torch.Tensor) -> None:
    real_rows = valid[:, None, :].expand(-1, patched.shape[1], -1)
    assert torch.isfinite(patched).all()
    assert (patched >= 0).all()
    sums = patched.sum(-1)[real_rows]
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    pad_cols = ~valid[:, None, None, :].expand_as(patched)
    assert (patched[pad_cols] == 0).all()
    pad_rows = ~valid[:, None, :, None].expand_as(patched)
    assert (patched[pad_rows] == 0).all()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 12),
    h=st.integers(1, 4),
    data=st.data(),
)
def test_rows_stay_distributions_and_flagged_columns_get_u_over_n(seed, k, h, data):
    b = 3
    lengths = [data.draw(st.integers(1, k)) for _ in range(b)]
    probs, valid = random_maps(seed, b, h, k, lengths)
    flags = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=k, max_size=k), min_size=b, max_size=b)))
    u = torch.tensor(data.draw(st.lists(st.floats(0.0, 3.0), min_size=h, max_size=h)), dtype=torch.float32)
    patched = redistribute(probs, flags, u, valid)
    check_rows(patched, valid)
    flags = flags & valid
    for i in range(b):
        n, s = int(valid[i].sum()), int(flags[i].sum())
        if s == 0:
            assert torch.equal(patched[i], probs[i])
        elif s < n and (s * u / n < 1).all():
            want = (u / n)[:, None, None].expand(h, n, s)
            got = patched[i][:, :n, :n][:, :, flags[i][:n]]
            assert torch.allclose(got, want, atol=1e-7, rtol=0)


def test_flagged_value_is_exactly_u_over_n():
    probs, valid = random_maps(0, 1, 2, 6, [6])
    flags = torch.tensor([[False, True, False, False, False, False]])
    u = torch.tensor([1.0, 0.5])
    patched = redistribute(probs, flags, u, valid)
    assert torch.equal(patched[0, 0, :, 1], torch.full((6,), 1.0 / 6))
    assert torch.equal(patched[0, 1, :, 1], torch.full((6,), 0.5 / 6))


def test_all_mass_on_flagged_column_is_spread_evenly():
    probs = torch.zeros(1, 1, 4, 4)
    probs[..., 2] = 1.0  # every row attends only to key 2
    valid = torch.ones(1, 4, dtype=torch.bool)
    flags = torch.tensor([[False, False, True, False]])
    patched = redistribute(probs, flags, torch.tensor([1.0]), valid)
    check_rows(patched, valid)
    assert torch.allclose(patched[0, 0, 0], torch.tensor([0.25, 0.25, 0.25, 0.25]))


def test_every_column_flagged_gives_uniform_rows():
    probs, valid = random_maps(1, 1, 2, 5, [5])
    patched = redistribute(probs, torch.ones(1, 5, dtype=torch.bool), torch.tensor([0.3, 2.0]), valid)
    check_rows(patched, valid)
    assert torch.allclose(patched, torch.full_like(patched, 0.2))


def test_many_flagged_columns_with_large_u_are_capped():
    probs, valid = random_maps(2, 1, 1, 6, [6])
    flags = torch.tensor([[True, True, True, True, False, False]])
    patched = redistribute(probs, flags, torch.tensor([3.0]), valid)  # 4 * 3 / 6 = 2 > 1
    check_rows(patched, valid)
    assert torch.allclose(patched[0, 0, :, :4], torch.full((6, 4), 0.25))


def test_single_real_token_flagged():
    probs, valid = random_maps(3, 1, 1, 4, [1])
    patched = redistribute(probs, torch.tensor([[True, False, False, False]]), torch.tensor([1.0]), valid)
    check_rows(patched, valid)
    assert patched[0, 0, 0, 0] == 1.0


def test_flags_on_padding_are_ignored():
    probs, valid = random_maps(4, 1, 2, 5, [3])
    patched = redistribute(probs, torch.tensor([[False, False, False, True, True]]), torch.ones(2), valid)
    assert torch.equal(patched, probs)


def test_mismatched_shapes_are_named():
    probs, valid = random_maps(5, 2, 2, 4, [4, 4])
    try:
        redistribute(probs, torch.zeros(2, 5, dtype=torch.bool), torch.ones(2), valid)
    except ShapeError as exc:
        assert "flagged" in str(exc) and "(2, 4)" in str(exc)
    else:
        raise AssertionError("no ShapeError")


def test_benign_attention_ignores_labelled_and_non_candidate_tokens():
    mass = torch.ones(2, 3, 1, 2)
    mass[0, 1] = 10.0  # a fault carrier
    mass[1, 0] = 5.0  # CLS, not a candidate
    candidate = torch.tensor([[True, True, True], [False, True, True]])
    labels = torch.tensor([[0, 1, 0], [0, 0, 0]])
    assert torch.equal(benign_attention(mass, candidate, labels), torch.ones(1, 2))
