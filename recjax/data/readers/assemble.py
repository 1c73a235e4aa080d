"""Assembly of the canonical `InteractionData` from per-interaction codes in file order."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from recjax.data.canonical import InteractionData, Sequences
from recjax.data.readers.common import TEXT_DTYPE, DataFormatError, Ids, PathLike


def assemble(name: str, users: np.ndarray, items: np.ndarray, user_raw: Sequence[str],
             item_raw: Sequence[str], timestamps: np.ndarray | None = None,
             item_text: Mapping[str, Mapping[str, str]] | None = None,
             user_features: Mapping[str, Mapping[str, Any]] | None = None,
             source: PathLike = "", sort_by_time: bool = True,
             ratings: np.ndarray | None = None,
             reviews: Mapping[str, Sequence[str]] | None = None,
             report: Sequence[str] = ()) -> InteractionData:
  """Builds `InteractionData` from per-interaction user/item codes in file order.

  `timestamps`, `ratings` and each `reviews` column, when given, hold one value per interaction
  in the same file order and are reordered together with the items. `report` lines (what the
  reader changed) start `InteractionData.report`; items absent from the item-text tables are
  counted into it.
  """
  users = np.asarray(users, np.int64)
  items = np.asarray(items, np.int64)
  if ratings is not None and len(ratings) != len(users):
    raise ValueError(f"{source}: got {len(ratings)} ratings for {len(users)} interactions")
  if len(users) == 0:
    raise DataFormatError(source, "no interactions left to read (empty file, or every row "
                          "filtered out by options such as min_rating)")
  if timestamps is not None and sort_by_time:
    timestamps = np.asarray(timestamps, np.int64)
    order = np.argsort(timestamps, kind="stable")
    order = order[np.argsort(users[order], kind="stable")]
  else:
    order = np.argsort(users, kind="stable")
  users, items = users[order], items[order]
  if timestamps is not None:
    timestamps = np.asarray(timestamps, np.int64)[order]
  if ratings is not None:
    ratings = np.asarray(ratings, np.float32)[order]
  reviews = {k: np.array(v, dtype=TEXT_DTYPE)[order] for k, v in (reviews or {}).items()}

  # Users: codes are already in first-appearance order; drop codes left without interactions.
  present = np.unique(users)
  row_of = np.full(len(user_raw), -1, np.int64)
  row_of[present] = np.arange(len(present))
  counts = np.bincount(row_of[users], minlength=len(present))
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

  # Items: renumber by first appearance in the chronological sequences, 1-based.
  codes, first = np.unique(items, return_index=True)
  ranked = codes[np.argsort(first, kind="stable")]
  new_id = np.zeros(len(item_raw), np.int32)
  new_id[ranked] = np.arange(1, len(ranked) + 1, dtype=np.int32)
  item_ids = ["<pad>"] + [item_raw[c] for c in ranked]
  user_ids = [user_raw[c] for c in present]

  text = {}
  for field, table in (item_text or {}).items():
    text[field] = np.array([""] + [table.get(raw, "") for raw in item_ids[1:]], dtype=TEXT_DTYPE)
  report = list(report) + missing_text_report(item_ids[1:], item_text or {})
  features = {}
  for field, table in (user_features or {}).items():
    values = [table.get(raw) for raw in user_ids]
    if all(isinstance(v, int) or v is None for v in values):
      features[field] = np.array([-1 if v is None else v for v in values], np.int32)
    else:
      features[field] = np.array(["" if v is None else str(v) for v in values], dtype=str)
  return InteractionData(
      name=name,
      sequences=Sequences(values=new_id[items], offsets=offsets),
      user_ids=np.array(user_ids, dtype=str),
      item_ids=np.array(item_ids, dtype=str),
      timestamps=timestamps,
      ratings=ratings,
      reviews=reviews,
      item_text=text,
      user_features=features,
      report=report,
  )


def missing_text_report(raw_items: Sequence[str], item_text: Mapping[str, Mapping[str, str]]
                        ) -> list[str]:
  """Report lines counting catalogue items that the item-text tables leave empty."""
  if not item_text:
    return []
  n = len(raw_items)
  missing: dict[int, list[str]] = {}  # count -> fields with that many items absent
  for field, table in item_text.items():
    absent = sum(raw not in table for raw in raw_items)
    if absent:
      missing.setdefault(absent, []).append(field)
  lines = [f"{count:,} of {n:,} items have no entry for {', '.join(map(repr, fields))} in the "
           "item table (left empty)" for count, fields in sorted(missing.items(), reverse=True)]
  if "title" in item_text:
    title = item_text["title"]
    blank = sum(raw in title and not title[raw] for raw in raw_items)
    if blank:
      lines.append(f"{blank:,} of {n:,} items have an empty title in the item table")
  return lines


def from_interactions(name: str, users: Sequence[str], items: Sequence[str],
                      timestamps: Sequence[int] | None = None,
                      item_text: Mapping[str, Mapping[str, str]] | None = None,
                      user_features: Mapping[str, Mapping[str, Any]] | None = None,
                      ratings: Sequence[float] | None = None) -> InteractionData:
  """Canonical data from raw (user, item[, timestamp][, rating]) interactions in file order.

  Args:
    name: dataset name.
    users: raw user id of each interaction.
    items: raw item id of each interaction.
    timestamps: Unix seconds of each interaction; None keeps file order within a user.
    item_text: field -> {raw item id: text}; items without an entry get "".
    user_features: field -> {raw user id: value}; int columns get -1 and str columns "" when
      missing.
    ratings: rating of each interaction (stored as float32), or None.
  """
  if (len(users) != len(items) or (timestamps is not None and len(timestamps) != len(users))
      or (ratings is not None and len(ratings) != len(users))):
    raise ValueError(f"users, items, timestamps and ratings must have equal lengths, got "
                     f"{len(users)}, {len(items)}, "
                     f"{None if timestamps is None else len(timestamps)}, "
                     f"{None if ratings is None else len(ratings)}")
  user_ids, item_ids = Ids(), Ids()
  user_codes = np.fromiter((user_ids(str(u)) for u in users), np.int64, len(users))
  item_codes = np.fromiter((item_ids(str(i)) for i in items), np.int64, len(items))
  return assemble(name, user_codes, item_codes, user_ids.raw, item_ids.raw,
                  None if timestamps is None else np.asarray(timestamps, np.int64),
                  item_text, user_features, source=name,
                  ratings=None if ratings is None else np.asarray(ratings, np.float32))
