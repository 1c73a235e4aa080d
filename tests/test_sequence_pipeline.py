"""SASRec training batches: no leakage on real data, exact process sharding, resume."""
import numpy as np
import pytest

from recjax.data import registry, splits
from recjax.data.canonical import Sequences
from recjax.data.sequence_pipeline import (BatchPlan, MakeLocalBatch, PipelineConfig,
                                           sample_negatives, training_batches)
from recjax.data.synthetic import make_synthetic
from tests.datasets import require_data_dir


def _epoch_batches(split, cfg, process_index=0, process_count=1):
  plan = BatchPlan(split.train.lengths, cfg)
  make = MakeLocalBatch(split.train, split.num_items, cfg, process_index, process_count)
  for i in range(plan.batches_per_epoch):
    rows, width = plan[i]
    yield rows[make.local], make.map((i, (rows, width)))


@pytest.mark.parametrize("name, bucketing", [("ml-100k", True), ("amazon_beauty", False)])
def test_no_validation_or_test_target_reaches_a_training_batch(name, bucketing):
  root = require_data_dir(name)
  data = registry.load_dataset({"name": name}, root)
  split = splits.leave_one_out(data)
  cfg = PipelineConfig(batch_size=256, max_len=50, num_negatives=1, length_bucketing=bucketing)
  heldout_positions = 0
  for rows, batch in _epoch_batches(split, cfg):
    for r, row in enumerate(rows):
      full = data.sequences[row]
      train = split.train[row]
      if len(full) >= 3:
        assert len(train) == len(full) - 2
        heldout_positions += 2
      np.testing.assert_array_equal(train, full[:len(train)])
      inputs = batch["inputs"][r][batch["inputs"][r] > 0]
      targets = batch["targets"][r][batch["targets"][r] > 0]
      # The row is a window of the training prefix: inputs[t] predicts targets[t] = next item.
      n = len(targets)
      np.testing.assert_array_equal(targets, train[len(train) - n:])
      np.testing.assert_array_equal(inputs, train[len(train) - n - 1:len(train) - 1])
      assert not np.isin(batch["negatives"][r][batch["targets"][r] > 0], train).any()
  assert heldout_positions > 0
  # Every validation / test target is the item right after the history it is evaluated on.
  for eval_set, offset in ((split.valid, 2), (split.test, 1)):
    for u, hist, target in zip(eval_set.users[:500], eval_set.histories, eval_set.targets):
      full = data.sequences[u]
      np.testing.assert_array_equal(hist, full[:len(full) - offset])
      assert target == full[len(full) - offset]


def _synthetic_split():
  data = make_synthetic(num_users=300, num_items=80, num_clusters=5, seed=1)
  return splits.leave_one_out(data)


def test_processes_read_disjoint_rows_that_reassemble_the_single_process_batch():
  split = _synthetic_split()
  cfg = PipelineConfig(batch_size=32, max_len=16, num_negatives=3)
  single = list(_epoch_batches(split, cfg))
  parts = [list(_epoch_batches(split, cfg, p, 4)) for p in range(4)]
  for i, (rows, batch) in enumerate(single):
    local_rows = [parts[p][i][0] for p in range(4)]
    assert len(np.unique(np.concatenate(local_rows))) == 32
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([parts[p][i][1][key] for p in range(4)]), batch[key])


def test_length_bucketing_trims_padding_and_epochs_cover_every_user():
  split = _synthetic_split()
  cfg = PipelineConfig(batch_size=16, max_len=64, num_negatives=1, bucket_window=4)
  plan = BatchPlan(split.train.lengths, cfg)
  seen, widths = [], set()
  for i in range(plan.batches_per_epoch):
    rows, width = plan[i]
    longest = int(np.minimum(split.train.lengths[rows] - 1, 64).max())
    assert longest <= width and (width == 8 or width // 2 < longest or width == 64)
    seen.extend(rows)
    widths.add(width)
  assert len(set(seen)) == len(seen) == plan.batches_per_epoch * 16
  assert len(widths) > 1
  # The next epoch is a different order of the same users.
  rows0, _ = plan[0]
  rows1, _ = plan[plan.batches_per_epoch]
  assert not np.array_equal(rows0, rows1)


def test_iterator_state_resumes_exactly():
  split = _synthetic_split()
  cfg = PipelineConfig(batch_size=16, max_len=16, num_negatives=2, num_threads=2)
  it = iter(training_batches(split.train, split.num_items, cfg))
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(3)]
  resumed = iter(training_batches(split.train, split.num_items, cfg))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])


# ----------------------------------------------------------------------------------------------
# Negative sampling when a user's history covers (most of) the catalogue.


def test_sample_negatives_uniform_over_the_unseen_items():
  rng = np.random.default_rng(0)
  exclude = np.array([1, 2, 3, 5, 8, 9, 10, 3, 0, 99])  # repeats, padding, out of range: ignored
  draws = sample_negatives(rng, 10, exclude, (30_000,))
  counts = np.bincount(draws, minlength=11)
  assert counts[[0, 1, 2, 3, 5, 8, 9, 10]].sum() == 0
  # Each of the 3 unseen items gets a third, within 5 standard deviations (~0.014).
  np.testing.assert_allclose(counts[[4, 6, 7]] / 30_000, 1 / 3, atol=0.014)
  assert draws.dtype == np.int32


def test_sample_negatives_when_nothing_or_one_item_is_left():
  rng = np.random.default_rng(0)
  none_left = sample_negatives(rng, 2, np.array([2, 1, 1]), (4, 3))
  assert none_left.shape == (4, 3) and none_left.dtype == np.int32
  assert not none_left.any()  # 0: "no negative", for consumers to mask
  np.testing.assert_array_equal(sample_negatives(rng, 2, np.array([1]), (50,)), 2)
  big = sample_negatives(rng, 100_000, np.arange(1, 100_000), (8,))
  np.testing.assert_array_equal(big, 100_000)


def test_two_item_catalogue_training_batches():
  # Users 0 and 1 have seen both items: no negative exists for them. User 2 has seen only item 1.
  train = Sequences.from_lists([[1, 2, 1], [2, 1], [1, 1, 1]])
  cfg = PipelineConfig(batch_size=3, max_len=4, num_negatives=2, length_bucketing=False,
                       num_threads=1, prefetch=1)
  it = iter(training_batches(train, 2, cfg))
  for _ in range(4):  # several epochs, reshuffled
    batch = next(it)
    assert batch["negatives"].shape == (3, 4, 2)
    for r in range(3):
      row_items = set(batch["inputs"][r][batch["inputs"][r] > 0]) | set(
          batch["targets"][r][batch["targets"][r] > 0])
      negatives = batch["negatives"][r]
      if row_items == {1, 2}:
        assert not negatives.any()
      else:
        assert row_items == {1} and (negatives == 2).all()
