"""The canonical form every reader produces and every later stage consumes.

raw files -> `InteractionData` (this module) -> splits -> pipelines -> models -> metrics.

Item ids are internal and dense: 1..num_items, with 0 reserved for padding, so an
item id is directly a row of an embedding table. Users are 0..num_users-1.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np


@dataclasses.dataclass(frozen=True)
class Sequences:
  """Ragged int32 sequences in CSR form: row u is `values[offsets[u]:offsets[u+1]]`."""

  values: np.ndarray  # int32 [total]
  offsets: np.ndarray  # int64 [num_rows + 1], offsets[0] == 0

  @classmethod
  def from_lists(cls, rows) -> "Sequences":
    rows = [np.asarray(r, dtype=np.int32) for r in rows]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    return cls(values=values, offsets=offsets)

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def __getitem__(self, row: int) -> np.ndarray:
    return self.values[self.offsets[row]:self.offsets[row + 1]]

  def __iter__(self) -> Iterator[np.ndarray]:
    for row in range(len(self)):
      yield self[row]

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)


@dataclasses.dataclass(frozen=True)
class InteractionData:
  """Per-user chronological item sequences plus an item table with whatever text exists."""

  name: str
  sequences: Sequences  # row u: user u's items, oldest first, ids in 1..num_items
  user_ids: np.ndarray  # str [num_users]: raw user id of each row
  item_ids: np.ndarray  # str [num_items + 1]: raw item id of each internal id; [0] == "<pad>"
  # Unix seconds aligned with `sequences.values`, or None when the files carry no time.
  timestamps: np.ndarray | None = None
  # Explicit ratings (float32, e.g. MovieLens 1..5 stars) aligned with `sequences.values` like
  # `timestamps`, or None when the files carry no rating column. Text rendering uses them for the
  # P5 rating prompts.
  ratings: np.ndarray | None = None
  # Per-interaction text (e.g. Amazon's "review" and "summary"), each a str array aligned with
  # `sequences.values` like `ratings`; "" where an interaction has none. The P5 explanation and
  # review prompts render from them.
  reviews: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  # Item text fields (e.g. "title", "brand", "categories", "description"), each a str array
  # [num_items + 1] aligned with `item_ids`; "" where an item lacks that field.
  item_text: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  # Per-user feature columns (e.g. MovieLens "gender", "age"), each [num_users].
  user_features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
  # What reading and preprocessing changed, one human-readable line each, in the order it
  # happened, e.g. "dropped 1,108 exact duplicate interactions (same user, item and timestamp)
  # of 5,269; ..." or "3 of 2,420 items have an empty title in the item table". The CLIs print
  # it; empty when nothing was changed (docs/data_formats.md, "The report").
  report: list[str] = dataclasses.field(default_factory=list)

  @property
  def num_users(self) -> int:
    return len(self.sequences)

  @property
  def num_items(self) -> int:
    return len(self.item_ids) - 1

  @property
  def num_interactions(self) -> int:
    return len(self.sequences.values)

  def summary(self) -> str:
    lengths = self.sequences.lengths
    return (f"{self.name}: {self.num_users:,} users, {self.num_items:,} items, "
            f"{self.num_interactions:,} interactions, mean history {lengths.mean():.1f}, "
            f"text fields {sorted(self.item_text) or 'none'}"
            + (f", interaction text {sorted(self.reviews)}" if self.reviews else ""))
