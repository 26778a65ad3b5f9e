"""Column features on hand-made maps."""

import torch

from atpatch.core.features import TokenLayout, column_features


def test_uniform_map_gives_one_whatever_the_length():
    for n in (3, 7):
        probs = torch.full((1, 2, n, n), 1.0 / n)
        feats = column_features(probs, torch.ones(1, n, dtype=torch.bool))
        assert torch.allclose(feats, torch.ones(1, n, 6))


def test_padding_columns_are_zero_and_rows_ignored():
    probs = torch.zeros(1, 1, 4, 4)
    probs[0, 0, :3, :3] = 1.0 / 3
    probs[0, 0, 3, :3] = torch.tensor([1.0, 0.0, 0.0])  # a padding query row: must not count
    feats = column_features(probs, torch.tensor([[True, True, True, False]]), kinds=("mean", "max"))
    assert torch.allclose(feats[0, :3], torch.ones(3, 2))
    assert torch.equal(feats[0, 3], torch.zeros(2))


def test_over_attended_column_stands_out_in_every_kind():
    probs = torch.full((1, 1, 5, 5), 0.1)
    probs[..., 2] = 0.6
    feats = column_features(probs, torch.ones(1, 5, dtype=torch.bool))
    assert torch.allclose(feats[0, 2], torch.tensor([3.0, 3.0, 3.0]))
    assert torch.allclose(feats[0, 0], torch.tensor([0.5, 0.5, 0.5]))


def test_layout_excludes_prefix_padding_and_special_ids():
    layout = TokenLayout(prefix=1, special_ids=(101, 102, 0))
    ids = torch.tensor([[101, 7, 8, 102, 0]])
    valid, candidate = layout.masks({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 1, 0]])}, 1, 5)
    assert valid.tolist() == [[True, True, True, True, False]]
    assert candidate.tolist() == [[False, True, True, False, False]]


def test_layout_positions_and_candidate_ids_narrow_the_candidates():
    ids = torch.tensor([[101, 7, 8, 9, 102]])
    only_pos = TokenLayout(prefix=1, positions=(2, 3))
    assert only_pos.masks({"input_ids": ids}, 1, 5)[1].tolist() == [[False, False, True, True, False]]
    only_ids = TokenLayout(prefix=1, special_ids=(101, 102), candidate_ids=(7, 9))
    assert only_ids.masks({"input_ids": ids}, 1, 5)[1].tolist() == [[False, True, False, True, False]]


def test_group_flags_spread_a_flag_to_every_candidate_of_that_input_only():
    candidate = torch.tensor([[False, True, False, True], [False, True, True, False]])
    flags = torch.tensor([[False, True, False, False], [False, False, False, False]])
    grouped = TokenLayout(flag_as_group=True).group_flags(flags, candidate)
    assert grouped.tolist() == [[False, True, False, True], [False, False, False, False]]
    assert torch.equal(TokenLayout().group_flags(flags, candidate), flags)


def test_same_token_flags_reach_every_copy_of_a_flagged_token_in_that_input_only():
    ids = torch.tensor([[101, 7, 8, 7, 102], [101, 7, 9, 7, 102]])  # the trigger (7) written twice in each
    candidate = ids != 101
    candidate &= ids != 102
    flags = torch.tensor([[False, True, False, False, False], [False] * 5])  # one copy flagged, in row 0 only
    tied = TokenLayout(flag_same_token=True).group_flags(flags, candidate, ids)
    assert tied.tolist() == [[False, True, False, True, False], [False] * 5]
    assert torch.equal(TokenLayout().group_flags(flags, candidate, ids), flags)  # off: the copy stays unflagged
    assert torch.equal(TokenLayout(flag_same_token=True).group_flags(flags, candidate), flags)  # no ids: no ties
    not_candidate = candidate.clone()
    not_candidate[0, 3] = False  # a copy that may not be flagged (e.g. outside `positions`) stays unflagged
    assert TokenLayout(flag_same_token=True).group_flags(flags, not_candidate, ids)[0].tolist() == flags[0].tolist()


def test_layout_round_trips_and_reads_older_detector_files():
    layout = TokenLayout(prefix=1, special_ids=(0,), positions=(3,), candidate_ids=(5, 6), flag_as_group=True)
    assert TokenLayout.from_dict(layout.to_dict()) == layout
    tied = TokenLayout(prefix=1, special_ids=(0,), flag_same_token=True)
    assert TokenLayout.from_dict(tied.to_dict()) == tied
    assert TokenLayout.from_dict(layout.to_dict()) == layout
    assert TokenLayout.from_dict({"prefix": 1, "special_ids": [0]}) == TokenLayout(prefix=1, special_ids=(0,))
