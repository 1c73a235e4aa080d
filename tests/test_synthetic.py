"""Synthetic data: deterministic, fast, well-formed, and learnable beyond popularity."""
from __future__ import annotations

import time

import numpy as np
import pytest

from recjax.data import registry
from recjax.data import splits
from recjax.data.canonical import Sequences
from recjax.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def data():
  return make_synthetic(num_users=2000, num_items=1000, num_clusters=20, seed=0)


def test_fast_and_deterministic(data):
  start = time.perf_counter()
  again = make_synthetic(num_users=2000, num_items=1000, num_clusters=20, seed=0)
  assert time.perf_counter() - start < 1.0
  np.testing.assert_array_equal(again.sequences.values, data.sequences.values)
  np.testing.assert_array_equal(again.sequences.offsets, data.sequences.offsets)
  np.testing.assert_array_equal(again.timestamps, data.timestamps)
  assert again.item_text["title"].tolist() == data.item_text["title"].tolist()
  other = make_synthetic(num_users=2000, num_items=1000, num_clusters=20, seed=1)
  assert not np.array_equal(other.sequences.values[:200], data.sequences.values[:200])


def test_well_formed(data):
  seq = data.sequences
  assert (data.num_users, data.num_items) == (2000, 1000)
  assert seq.values.dtype == np.int32 and seq.values.min() >= 1 and seq.values.max() <= 1000
  assert seq.lengths.min() >= 5 and seq.lengths.max() <= 40
  assert len(data.item_ids) == 1001 and data.item_ids[0] == "<pad>"
  user_of = np.repeat(np.arange(data.num_users), seq.lengths)
  same_user = user_of[1:] == user_of[:-1]
  assert np.all(np.diff(data.timestamps)[same_user] > 0)
  titles = data.item_text["title"]
  categories = data.item_text["category"]
  assert titles[0] == "" and all(titles[1:] != "")
  assert all(str(t).startswith(str(c) + " ") for t, c in zip(titles[1:], categories[1:]))
  assert len(set(categories[1:].tolist())) == 20
  assert len(set(titles[1:].tolist())) == 1000


def hit_rate(scores: np.ndarray, targets: np.ndarray, k: int = 10) -> float:
  scores = scores.copy()
  scores[:, 0] = -np.inf  # padding is never a candidate
  top = np.argpartition(-scores, k, axis=1)[:, :k]
  return float((top == targets[:, None]).any(axis=1).mean())


def transition_counts(train: Sequences, num_items: int) -> np.ndarray:
  row_of = np.repeat(np.arange(len(train)), train.lengths)
  same = row_of[1:] == row_of[:-1]
  counts = np.zeros((num_items + 1, num_items + 1))
  np.add.at(counts, (train.values[:-1][same], train.values[1:][same]), 1.0)
  return counts


def test_transitions_beat_popularity_by_a_wide_margin(data):
  split = splits.leave_one_out(data)
  test = split.test
  popularity = np.bincount(split.train.values, minlength=data.num_items + 1).astype(float)
  pop_hr = hit_rate(np.tile(popularity, (len(test), 1)), test.targets)

  last = test.histories.values[test.histories.offsets[1:] - 1]
  counts = transition_counts(split.train, data.num_items)
  # Popularity only breaks ties between items with equal transition counts.
  markov_hr = hit_rate(counts[last] + 1e-3 * popularity / popularity.max(), test.targets)

  # Oracle on the latent clusters: the next item is a popular item of the clusters that most
  # often follow the last item's cluster in training.
  cluster = {t: c for c, t in enumerate(sorted(set(data.item_text["category"][1:].tolist())))}
  cluster_of = np.array([-1] + [cluster[c] for c in data.item_text["category"][1:].tolist()])
  cluster_counts = transition_counts(
      Sequences(cluster_of[split.train.values] + 1, split.train.offsets), len(cluster))[1:, 1:]
  next_cluster = cluster_counts / cluster_counts.sum(1, keepdims=True)
  in_cluster_pop = popularity / np.bincount(cluster_of[1:], popularity[1:])[cluster_of]
  oracle = next_cluster[cluster_of[last]][:, cluster_of] * in_cluster_pop
  oracle_hr = hit_rate(oracle, test.targets)

  assert pop_hr < 0.2
  assert markov_hr > 0.35 and markov_hr > 3 * pop_hr
  assert oracle_hr > 0.45 and oracle_hr > 3 * pop_hr


def test_registry_builtin_and_overrides():
  default = registry.load_dataset({"name": "synthetic"})
  assert (default.num_users, default.num_items) == (2000, 1000)
  small = registry.load_dataset({"name": "synthetic", "num_users": 10, "num_items": 30,
                                 "num_clusters": 3, "seed": 7, "max_length": 6})
  assert small.num_users == 10 and small.sequences.lengths.max() <= 6


@pytest.mark.parametrize("kwargs,match", [
    ({"num_clusters": 0}, "num_clusters"),
    ({"num_items": 5, "num_clusters": 6}, "num_clusters"),
    ({"min_length": 5, "max_length": 4}, "min_length <= max_length"),
    ({"transition_peak": 1.5}, "transition_peak"),
])
def test_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    make_synthetic(**{"num_users": 5, "num_items": 20, "num_clusters": 2, **kwargs})
