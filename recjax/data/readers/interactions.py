"""Interaction files: one interaction per line (pairs) or one user per line (sequences)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from recjax.data.canonical import InteractionData
from recjax.data.readers.assemble import assemble
from recjax.data.readers.common import (DataFormatError, Ids, PathLike, numeric_tokens, raw_id,
                                        read_lines, split_fields, to_float, to_timestamp)
from recjax.data.readers.item_text import joined_text

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp", "-")


def read_interaction_rows(path: PathLike, *, sep: str | None, columns: Sequence[str],
                          header: bool = False, encoding: str = "utf-8",
                          numeric_ids: bool = False, min_rating: float | None = None,
                          user_ids: Ids, item_ids: Ids):
  """Parses one-interaction-per-line rows.

  Returns:
    (user codes, item codes, timestamps or None, ratings or None) of the kept rows; timestamps
    and ratings are None when `columns` has no such column.
  """
  columns = list(columns)
  unknown = sorted(set(columns) - set(INTERACTION_COLUMNS))
  if unknown or "user" not in columns or "item" not in columns:
    raise ValueError(f"columns {columns} for {path}: each must be one of "
                     f"{list(INTERACTION_COLUMNS)} and 'user' and 'item' are required")
  if min_rating is not None and "rating" not in columns:
    raise ValueError(f"min_rating={min_rating} needs a 'rating' column; columns are {columns}")
  u_col, i_col = columns.index("user"), columns.index("item")
  r_col = columns.index("rating") if "rating" in columns else None
  t_col = columns.index("timestamp") if "timestamp" in columns else None
  users, items, times, ratings = [], [], [], []
  lines = read_lines(path, encoding)
  if header:
    next(lines, None)
  n = len(columns)
  shown = " ".join(columns)
  seen = 0
  for lineno, line in lines:
    seen += 1
    parts = split_fields(line, sep)
    if len(parts) != n:
      raise DataFormatError(path, f"expected {n} fields '{shown}' separated by "
                            f"{'whitespace' if sep is None else repr(sep)}, got {len(parts)}: "
                            f"{line[:80]!r}", lineno)
    if r_col is not None:
      rating = to_float(parts[r_col], path, lineno, "rating")
      if min_rating is not None and rating < min_rating:
        continue
      ratings.append(rating)
    if t_col is not None:
      times.append(to_timestamp(parts[t_col], path, lineno))
    users.append(user_ids(raw_id(parts[u_col].strip(), numeric_ids, path, lineno, "user id")))
    items.append(item_ids(raw_id(parts[i_col].strip(), numeric_ids, path, lineno, "item id")))
  if not seen:
    raise DataFormatError(path, "file has no interactions")
  return (np.asarray(users, np.int64), np.asarray(items, np.int64),
          None if t_col is None else np.asarray(times, np.int64),
          None if r_col is None else np.asarray(ratings, np.float32))


def read_pairs(interactions: PathLike, *, name: str = "pairs", sep: str | None = None,
               columns: Sequence[str] = ("user", "item"), header: bool = False,
               numeric_ids: bool = False, min_rating: float | None = None,
               encoding: str = "utf-8", item_text: Sequence[Mapping[str, Any]] = ()
               ) -> InteractionData:
  """Reads a file with one interaction per line (e.g. SASRec's `Video.txt`: `user item`).

  Args:
    interactions: path of the file.
    name: dataset name.
    sep: field separator; None splits on any whitespace.
    columns: meaning of each field, from "user", "item", "rating", "timestamp", "-" (ignored).
      Without "timestamp", lines are taken to be chronological per user. A "rating" column
      fills `InteractionData.ratings`.
    header: skip the first line.
    numeric_ids: require integer user and item ids.
    min_rating: keep rows whose rating is >= this (needs a "rating" column).
    encoding: text encoding of the file.
    item_text: item-text join specs (see `read_item_text`).
  """
  user_ids, item_ids = Ids(), Ids()
  users, items, times, ratings = read_interaction_rows(
      interactions, sep=sep, columns=columns, header=header, encoding=encoding,
      numeric_ids=numeric_ids, min_rating=min_rating, user_ids=user_ids, item_ids=item_ids)
  return assemble(name, users, items, user_ids.raw, item_ids.raw, times,
                  joined_text(item_text), source=interactions, ratings=ratings)


def read_sequences(sequences: PathLike, *, name: str = "sequences", sep: str | None = None,
                   numeric_ids: bool = False, encoding: str = "utf-8",
                   item_text: Sequence[Mapping[str, Any]] = ()) -> InteractionData:
  """Reads `user item item ...` lines (items oldest first), e.g. Beauty.txt.

  A user on several lines gets the lines' items concatenated in file order.

  Args:
    sequences: path of the file.
    name: dataset name.
    sep: field separator; None splits on any whitespace.
    numeric_ids: require integer user and item ids.
    encoding: text encoding of the file.
    item_text: item-text join specs (see `read_item_text`).
  """
  user_ids, item_ids = Ids(), Ids()
  users, items = [], []
  for lineno, line in read_lines(sequences, encoding):
    parts = split_fields(line, sep)
    if len(parts) < 2:
      raise DataFormatError(sequences, "expected 'user item [item ...]' (at least 2 fields), "
                            f"got {len(parts)}: {line[:80]!r}", lineno)
    user = user_ids(raw_id(parts[0].strip(), numeric_ids, sequences, lineno, "user id"))
    tokens = parts[1:] if sep is None else [t.strip() for t in parts[1:]]
    if numeric_ids:
      tokens = numeric_tokens(tokens, sequences, lineno)
    items.extend(item_ids.many(tokens))
    users.extend([user] * len(tokens))
  if not users:
    raise DataFormatError(sequences, "file has no interactions")
  return assemble(name, np.asarray(users), np.asarray(items), user_ids.raw, item_ids.raw,
                  None, joined_text(item_text), source=sequences)
