"""Splits on real ml-100k (and synthetic data): no evaluation target ever reaches training."""
from __future__ import annotations

import numpy as np
import pytest

from recjax.data import registry
from recjax.data import splits
from tests.datasets import require_data_dir


@pytest.fixture(scope="module", params=["ml-100k", "synthetic"])
def data(request):
  if request.param == "synthetic":
    return registry.load_dataset({"name": "synthetic", "num_users": 500, "num_items": 300,
                                  "num_clusters": 10, "min_length": 1, "max_length": 30})
  return registry.load_dataset({"name": "ml-100k"}, require_data_dir("ml-100k"))


def user_times(data, user):
  offsets = data.sequences.offsets
  return data.timestamps[offsets[user]:offsets[user + 1]]


def check_eval_set(data, eval_set, train_len):
  """Histories are exact prefixes ending right before the target, past every training item."""
  positions = eval_set.histories.lengths
  for i, user in enumerate(eval_set.users):
    seq = data.sequences[user]
    pos = positions[i]
    np.testing.assert_array_equal(eval_set.histories[i], seq[:pos])
    assert seq[pos] == eval_set.targets[i]
    assert pos >= train_len.get(int(user), 0)
  return positions


def test_leave_one_out(data):
  split = splits.make_split(data, "leave_one_out")
  seq = data.sequences
  assert split.protocol == "leave_one_out" and split.num_items == data.num_items
  np.testing.assert_array_equal(split.train_users, np.arange(data.num_users))
  train_len = {}
  for row, user in enumerate(split.train_users):
    full = seq[user]
    train = split.train[row]
    np.testing.assert_array_equal(train, full[:len(train)])
    assert len(train) == (len(full) - 2 if len(full) >= 3 else len(full))
    train_len[int(user)] = len(train)
  long_enough = np.flatnonzero(seq.lengths >= 3)
  np.testing.assert_array_equal(split.valid.users, long_enough)
  np.testing.assert_array_equal(split.test.users, long_enough)
  valid_pos = check_eval_set(data, split.valid, train_len)
  test_pos = check_eval_set(data, split.test, train_len)
  np.testing.assert_array_equal(valid_pos, seq.lengths[long_enough] - 2)
  np.testing.assert_array_equal(test_pos, seq.lengths[long_enough] - 1)
  if data.name == "ml-100k":
    assert len(split.test) == 943 and split.train.values.size == 100_000 - 2 * 943


def test_temporal(data):
  split = splits.make_split(data, "temporal", valid_fraction=0.1, test_fraction=0.1)
  t_valid = np.quantile(data.timestamps, 0.8)
  t_test = np.quantile(data.timestamps, 0.9)
  train_len = {}
  for row, user in enumerate(split.train_users):
    times = user_times(data, user)
    train = split.train[row]
    np.testing.assert_array_equal(train, data.sequences[user][:len(train)])
    assert np.all(times[:len(train)] < t_valid)  # everything in train precedes the cut-off
    assert len(train) == len(times) or times[len(train)] >= t_valid  # the prefix is maximal
    train_len[int(user)] = len(train)
  assert len(split.train.values) == np.sum(data.timestamps < t_valid)

  for eval_set, lo, hi in ((split.valid, t_valid, t_test), (split.test, t_test, np.inf)):
    assert len(eval_set) > 0
    positions = check_eval_set(data, eval_set, train_len)
    for i, user in enumerate(eval_set.users):
      times = user_times(data, user)
      pos = positions[i]
      assert lo <= times[pos] < hi
      assert np.all(times[:pos] < lo)  # the target is the user's first one in its window


def test_temporal_needs_timestamps(tmp_path):
  (tmp_path / "s").mkdir()
  (tmp_path / "s" / "seq.txt").write_text("1 1 2 3\n2 2 3 4\n")
  data = registry.load_dataset({"name": "s", "format": "sequence", "dir": "s",
                                "files": {"sequences": "seq.txt"}}, tmp_path)
  with pytest.raises(ValueError, match="needs timestamps"):
    splits.make_split(data, "temporal")
  with pytest.raises(ValueError, match="unknown split"):
    splits.make_split(data, "random")
