"""Grouping prompts by a shared opening (the transformers backend runs each opening once)."""

from __future__ import annotations

from emarena.eval.backends.hf import shared_prefix_groups


def test_groups_cover_every_sequence_once_with_a_true_common_prefix():
    art = list(range(100, 140))  # a 40-token opening (one article)
    seqs = [art + [1, 2, 3], [7, 8], art + [1, 2, 9], art + [5], list(range(50)), art + [1]]
    groups = shared_prefix_groups(seqs, 32)
    assert sorted(i for _, members in groups for i in members) == list(range(len(seqs)))
    by_members = {tuple(sorted(m)): p for p, m in groups}
    # the four article sequences share the article (not [1, 2]: [art + [5]] stops at the art)
    assert by_members[(0, 2, 3, 5)] == art
    # the others share no opening of 32 tokens: alone, no prefix
    assert by_members[(1,)] == [] and by_members[(4,)] == []
    for prefix, members in groups:
        for i in members:  # a true prefix, and every member keeps at least one token after it
            assert seqs[i][: len(prefix)] == prefix and len(seqs[i]) > len(prefix)


def test_a_sequence_equal_to_the_opening_keeps_its_last_token_as_suffix():
    a = list(range(40))
    groups = shared_prefix_groups([a, a + [1], a], 32)
    assert groups == [(a[:39], [0, 2, 1])]


def test_below_the_minimum_nothing_is_shared():
    groups = shared_prefix_groups([[1] * 10 + [2], [1] * 10 + [3]], 32)
    assert groups == [([], [0]), ([], [1])]
