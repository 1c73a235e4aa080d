"""Grain pipeline of next-item training batches for ID-based sequential models (SASRec).

Element i of the dataset is global batch i. Every process derives the same batch plan (which users
form batch i, and how wide it is) from the seed, then materialises only its own rows, so a run on
P processes sees exactly the batches of a run on one. The iterator's position is a plain index,
checkpointed with the model.

Each row is a user's training sequence shifted by one, right-aligned: `inputs[t]` predicts
`targets[t]`; 0 is padding. With `length_bucketing`, users of similar history length are batched
together (within a window of `bucket_window` batches) and each batch is trimmed to the smallest
bucket width that holds its longest row. On datasets whose mean history is a few items while
max_len is 50-200, this removes most of the padding and the compute spent on it.
"""
from __future__ import annotations

import dataclasses

import grain
import numpy as np

from recjax.data.canonical import Sequences


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  batch_size: int            # global batch size
  max_len: int               # longest input the model reads
  num_negatives: int = 1     # sampled negatives per position (0: none, e.g. full softmax)
  length_bucketing: bool = True
  bucket_window: int = 64    # batches sorted by length together (larger: less padding, less mixing)
  seed: int = 0
  num_threads: int = 2       # Grain reader threads building batches ahead of the model
  prefetch: int = 4          # batches buffered ahead


def bucket_widths(max_len: int) -> list[int]:
  """Widths a trimmed batch may take: powers of two below max_len, then max_len."""
  widths, w = [], 8
  while w < max_len:
    widths.append(w)
    w *= 2
  return widths + [max_len]


class BatchPlan:
  """Random-access plan: batch index -> (user rows, width). Infinite; epochs reshuffle."""

  def __init__(self, lengths: np.ndarray, cfg: PipelineConfig):
    self.cfg = cfg
    self.rows = np.flatnonzero(lengths >= 2).astype(np.int32)  # need one input and one target
    if len(self.rows) < cfg.batch_size:
      raise ValueError(f"only {len(self.rows)} training users have >= 2 items, fewer than "
                       f"train.batch_size={cfg.batch_size}")
    self.steps = np.minimum(lengths[self.rows] - 1, cfg.max_len)  # training positions per row
    self.batches_per_epoch = len(self.rows) // cfg.batch_size
    self.widths = np.asarray(bucket_widths(cfg.max_len))
    self._cache: tuple[int, np.ndarray] = (-1, np.zeros((0, cfg.batch_size), np.int64))

  def __len__(self) -> int:
    return np.iinfo(np.int64).max // 2

  def _epoch_order(self, epoch: int) -> np.ndarray:
    cached_epoch, cached = self._cache  # one attribute: safe to read from Grain's threads
    if epoch == cached_epoch:
      return cached
    rng = np.random.default_rng([self.cfg.seed, epoch])
    n = self.batches_per_epoch * self.cfg.batch_size
    order = rng.permutation(len(self.rows))[:n]  # the users left out are random, not the longest
    if self.cfg.length_bucketing:
      chunk = self.cfg.batch_size * self.cfg.bucket_window
      parts = []
      for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        parts.append(part[np.argsort(self.steps[part], kind="stable")])
      order = np.concatenate(parts).reshape(-1, self.cfg.batch_size)
      order = order[rng.permutation(len(order))]
    order = order.reshape(-1)[:n].reshape(-1, self.cfg.batch_size)
    self._cache = (epoch, order)
    return order

  def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
    epoch, i = divmod(int(index), self.batches_per_epoch)
    members = self._epoch_order(epoch)[i]
    longest = int(self.steps[members].max())
    width = int(self.widths[np.searchsorted(self.widths, longest)]) \
        if self.cfg.length_bucketing else self.cfg.max_len
    return self.rows[members], width


def right_aligned(seq: np.ndarray, width: int) -> np.ndarray:
  """The last `width` items of `seq`, left-padded with 0 to `width`."""
  out = np.zeros(width, np.int32)
  tail = seq[-width:] if width else seq[:0]
  out[width - len(tail):] = tail
  return out


def sample_negatives(rng: np.random.Generator, num_items: int, exclude: np.ndarray,
                     shape: tuple[int, ...]) -> np.ndarray:
  """Uniform items in 1..num_items, none of them in `exclude` (the user's own items).

  Where `exclude` covers the whole catalogue there is no negative to draw: every slot is 0
  ("no negative"). Consumers (sampled losses, sampled evaluation) must mask slots holding 0,
  the padding id, which never is a real item. Runs in bounded time whatever the share of the
  catalogue excluded.
  """
  draw = rng.integers(1, num_items + 1, size=shape, dtype=np.int32)
  bad = np.isin(draw, exclude)
  if not bad.any():
    return draw
  # Redraw the hits directly from the complement: the k-th allowed item is k + 1 plus the
  # number of excluded items at or below it (found by a search over the sorted exclusions).
  excluded = np.unique(np.asarray(exclude, np.int64))
  excluded = excluded[(excluded >= 1) & (excluded <= num_items)]
  allowed = num_items - len(excluded)
  if allowed <= 0:
    return np.zeros(shape, np.int32)
  rank = rng.integers(0, allowed, size=int(bad.sum()))
  below = excluded - 1 - np.arange(len(excluded))  # allowed items smaller than each exclusion
  draw[bad] = rank + 1 + np.searchsorted(below, rank, side="right")
  return draw


class MakeLocalBatch(grain.transforms.Map):
  """Global batch plan -> this process's rows as numpy arrays."""

  def __init__(self, train: Sequences, num_items: int, cfg: PipelineConfig,
               process_index: int, process_count: int):
    if cfg.batch_size % process_count:
      raise ValueError(f"train.batch_size={cfg.batch_size} must divide by the number of "
                       f"processes ({process_count})")
    self.train, self.num_items, self.cfg = train, num_items, cfg
    local = cfg.batch_size // process_count
    self.local = slice(process_index * local, (process_index + 1) * local)

  def map(self, element):
    (index, (rows, width)) = element
    cfg = self.cfg
    first = self.local.start
    local_rows = rows[self.local]
    inputs = np.zeros((len(local_rows), width), np.int32)
    targets = np.zeros_like(inputs)
    negatives = np.zeros((len(local_rows), width, cfg.num_negatives), np.int32)
    for r, row in enumerate(local_rows):
      seq = self.train[row]
      inputs[r] = right_aligned(seq[:-1], width)
      targets[r] = right_aligned(seq[1:], width)
      if cfg.num_negatives:
        # Seeded by (seed, batch, global row): identical whatever the number of processes.
        rng = np.random.default_rng([cfg.seed, index, first + r])
        negatives[r] = sample_negatives(rng, self.num_items, seq, (width, cfg.num_negatives))
    batch = {"inputs": inputs, "targets": targets}
    if cfg.num_negatives:
      batch["negatives"] = negatives
    return batch


def training_batches(train: Sequences, num_items: int, cfg: PipelineConfig,
                     process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """Infinite, checkpointable iterator of this process's part of each global batch."""
  plan = BatchPlan(train.lengths, cfg)
  ds = grain.MapDataset.source(plan)
  ds = ds.map_with_index(lambda i, x: (i, x))
  ds = ds.map(MakeLocalBatch(train, num_items, cfg, process_index, process_count))
  read = grain.ReadOptions(num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch)
  return ds.to_iter_dataset(read)


def steps_per_epoch(train: Sequences, cfg: PipelineConfig) -> int:
  return BatchPlan(train.lengths, cfg).batches_per_epoch
