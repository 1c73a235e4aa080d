"""Association rules against hand-counted statistics; only training data reaches them."""
from __future__ import annotations

import numpy as np
import pytest

from recjax.curriculum import cooccurrence
from recjax.data import splits
from recjax.data.canonical import InteractionData, Sequences

# Hand-counted below: 4 training sequences over items 1..4.
TRAIN = Sequences.from_lists([[1, 2, 3], [1, 2], [2, 1, 4], [3]])


def stats(rules):
  return {(int(a), int(b)): (int(c), s, conf, l) for a, b, c, s, conf, l in zip(
      rules.antecedent, rules.consequent, rules.count, rules.support, rules.confidence,
      rules.lift)}


def test_window_one_matches_hand_counts():
  rules = cooccurrence.mine_rules(TRAIN, num_items=4, window=1, min_count=1, min_lift=0.0)
  # count(1)=3, count(2)=3, count(3)=2, count(4)=1 sequences of n=4.
  expected = {(1, 2): (2, 2 / 4, 2 / 3, (2 / 3) / (3 / 4)),
              (2, 3): (1, 1 / 4, 1 / 3, (1 / 3) / (2 / 4)),
              (2, 1): (1, 1 / 4, 1 / 3, (1 / 3) / (3 / 4)),
              (1, 4): (1, 1 / 4, 1 / 3, (1 / 3) / (1 / 4))}
  got = stats(rules)
  assert got.keys() == expected.keys()
  for pair, values in expected.items():
    assert got[pair][0] == values[0]
    np.testing.assert_allclose(got[pair][1:], values[1:], err_msg=str(pair))
  # Best first: confidence, then lift; ties by ids.
  assert list(zip(rules.antecedent.tolist(), rules.consequent.tolist())) == [
      (1, 2), (1, 4), (2, 3), (2, 1)]
  assert rules.num_sequences == 4


def test_window_direction_and_thresholds():
  wide = stats(cooccurrence.mine_rules(TRAIN, 4, window=2, min_count=1, min_lift=0.0))
  assert set(wide) == {(1, 2), (2, 3), (2, 1), (1, 4), (1, 3), (2, 4)}
  assert wide[(1, 3)][0] == 1 and wide[(2, 4)][2] == pytest.approx(1 / 3)
  both = stats(cooccurrence.mine_rules(TRAIN, 4, window=1, ordered=False, min_count=1,
                                       min_lift=0.0))
  assert both[(1, 2)][0] == 3 and both[(2, 1)][0] == 3 and both[(4, 1)][0] == 1
  # Default thresholds: min_count 2 and lift >= 1 drop all four (only (1,2) has count 2, lift 8/9).
  assert len(cooccurrence.mine_rules(TRAIN, 4, window=1)) == 0
  lifted = cooccurrence.mine_rules(TRAIN, 4, window=1, min_count=1, min_lift=1.0)
  assert lifted.pairs() == {(1, 4)}
  confident = cooccurrence.mine_rules(TRAIN, 4, window=1, min_count=1, min_lift=0,
                                      min_confidence=0.5)
  assert confident.pairs() == {(1, 2)}
  supported = cooccurrence.mine_rules(TRAIN, 4, window=1, min_count=1, min_lift=0,
                                      min_support=0.3)
  assert supported.pairs() == {(1, 2)}
  assert len(cooccurrence.mine_rules(TRAIN, 4, window=1, min_count=1, min_lift=0,
                                     max_rules=2)) == 2


def test_counts_are_per_sequence_and_repeats_are_not_rules():
  train = Sequences.from_lists([[1, 2, 1, 2], [5, 5, 5]])
  got = stats(cooccurrence.mine_rules(train, 5, window=1, min_count=1, min_lift=0))
  assert got.keys() == {(1, 2), (2, 1)}
  assert got[(1, 2)][0] == 1 and got[(1, 2)][2] == 1.0  # counted once in its sequence


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="window must be >= 1, got 0"):
    cooccurrence.mine_rules(TRAIN, 4, window=0)
  with pytest.raises(ValueError, match=r"items must lie in 1..3, got 1..4"):
    cooccurrence.mine_rules(TRAIN, 3)


def test_no_validation_or_test_pair_enters():
  # Items 1..6 are shared training items; each user's two targets (7 + 2u, 8 + 2u) are theirs
  # alone, so any rule with a target item, or with a (last history item, target) pair, leaked.
  rng = np.random.default_rng(0)
  rows = [list(rng.integers(1, 7, 6)) + [7 + 2 * u, 8 + 2 * u] for u in range(20)]
  num_items = 6 + 2 * 20
  data = InteractionData(
      name="leak", sequences=Sequences.from_lists(rows),
      user_ids=np.array([f"u{u}" for u in range(20)]),
      item_ids=np.array(["<pad>"] + [f"i{i}" for i in range(1, num_items + 1)]))
  split = splits.make_split(data, "leave_one_out")
  held_out = set(split.valid.targets.tolist()) | set(split.test.targets.tolist())
  assert held_out == set(range(7, num_items + 1))
  rules = cooccurrence.mine_rules(split.train, num_items, window=5, ordered=False,
                                  min_count=1, min_lift=0.0)
  assert len(rules) > 0
  items = set(rules.antecedent.tolist()) | set(rules.consequent.tolist())
  assert not items & held_out
  # The same mining over the full sequences does see them: the check above can fail.
  leaky = cooccurrence.mine_rules(data.sequences, num_items, window=5, ordered=False,
                                  min_count=1, min_lift=0.0)
  assert (set(leaky.antecedent.tolist()) | set(leaky.consequent.tolist())) & held_out


def test_rule_sentences_carry_the_statistics():
  rules = cooccurrence.mine_rules(TRAIN, 4, window=1, min_count=1, min_lift=1.0)
  assert cooccurrence.rule_sentences(rules, lambda i: f"<item_{i}>") == [
      "Users who interact with <item_1> then interact with <item_4> with probability 0.33 "
      "(support 0.25, lift 1.33)."]
  custom = cooccurrence.rule_sentences(rules, str, template="{a}->{b} n={count}")
  assert custom == ["1->4 n=1"]


def test_alignment_sentences():
  data = InteractionData(
      name="tiny", sequences=Sequences.from_lists([[1, 2, 3]]), user_ids=np.array(["u0"]),
      item_ids=np.array(["<pad>", "A1", "A2", "A3"]),
      item_text={"title": np.array(["", "Gel Pen  &amp; Refill", "Stapler", ""]),
                 "brand": np.array(["", "Pilot", "", ""]),
                 "categories": np.array(["", "Office Products, Office Supplies, Pens, Gel",
                                         "Office Products, Staplers", ""])})
  got = cooccurrence.alignment_sentences(data, lambda i: f"<a_{i}>")
  assert got == [
      (1, "This item <a_1> is described as Gel Pen & Refill, by Pilot, in Office Supplies, "
          "Pens, Gel."),
      (2, "This item <a_2> is described as Stapler, in Office Products, Staplers.")]
  assert cooccurrence.alignment_sentence("X", brand="B") == "This item X, by B."


def test_heldout_pairs_by_novelty():
  # Items 1..3 train; 4 appears only as a validation target, 5 only in a test history and target.
  data = InteractionData(
      name="cold", sequences=Sequences.from_lists([[1, 2, 3, 1, 2], [2, 3, 4, 1], [5, 6]]),
      user_ids=np.array(["u0", "u1", "u2"]),
      item_ids=np.array(["<pad>"] + [f"i{i}" for i in range(1, 7)]))
  split = splits.make_split(data, "leave_one_out")
  # u0: train [1,2,3], valid 1 after [1,2,3], test 2 after [1,2,3,1]; u1: train [2,3],
  # valid 4 after [2,3], test 1 after [2,3,4]; u2 (2 items) trains on [5, 6], no targets.
  valid = cooccurrence.heldout_pairs(split.train, split.valid, window=2)
  assert sorted(zip(*map(list, valid["both_seen"]))) == [(2, 1), (3, 1)]
  assert sorted(zip(*map(list, valid["one_unseen"]))) == [(2, 4), (3, 4)]
  test = cooccurrence.heldout_pairs(split.train, split.test, window=1)
  assert sorted(zip(*map(list, test["both_seen"]))) == [(1, 2)]
  assert sorted(zip(*map(list, test["one_unseen"]))) == [(4, 1)]
  assert len(test["both_unseen"][0]) == 0
  data2 = InteractionData(
      name="cold2", sequences=Sequences.from_lists([[1, 2], [1, 7, 8, 9]]),
      user_ids=np.array(["u0", "u1"]),
      item_ids=np.array(["<pad>"] + [f"i{i}" for i in range(1, 10)]))
  split2 = splits.make_split(data2, "leave_one_out")
  test2 = cooccurrence.heldout_pairs(split2.train, split2.test)
  assert sorted(zip(*map(list, test2["both_unseen"]))) == [(8, 9)]
