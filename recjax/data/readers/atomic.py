"""RecBole atomic files: `.inter` (one interaction per row), the sequential benchmark variant
(`.test.inter` + `.valid.inter`) and `.item` text tables."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from recjax.data.canonical import InteractionData
from recjax.data.readers.assemble import assemble
from recjax.data.readers.common import (DataFormatError, Ids, PathLike, clean_text, read_lines,
                                        to_float, to_timestamp)
from recjax.data.readers.item_text import joined_text, merge_text

ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def _atomic_header(path: PathLike, line: str, sep: str, known: Sequence[str] | None,
                   ignore: Sequence[str]) -> list[tuple[str, str]]:
  columns = []
  for field in line.split(sep):
    name, colon, typ = field.strip().partition(":")
    if not colon or not name:
      raise DataFormatError(path, f"header column {field!r} is not 'name:type' (RecBole atomic "
                            "files start with a header such as 'user_id:token\\titem_id:token')",
                            1)
    if typ not in ATOMIC_TYPES:
      raise DataFormatError(path, f"header column {field!r} has unknown type {typ!r}; valid "
                            f"types: {list(ATOMIC_TYPES)}", 1)
    if known is not None and name not in known and name not in ignore:
      raise DataFormatError(path, f"unknown header column {name!r}; known columns: "
                            f"{list(known)} (list extra columns in the 'ignore_columns' option)",
                            1)
    columns.append((name, typ))
  return columns


def _atomic_rows(path: PathLike, sep: str, known: Sequence[str] | None,
                 ignore: Sequence[str], encoding: str):
  lines = read_lines(path, encoding)
  first = next(lines, None)
  if first is None:
    raise DataFormatError(path, "file is empty (expected a 'name:type' header line)")
  columns = _atomic_header(path, first[1], sep, known, ignore)
  names = [c for c, _ in columns]

  def rows():
    for lineno, line in lines:
      parts = line.split(sep)
      if len(parts) != len(columns):
        raise DataFormatError(path, f"expected {len(columns)} fields {names} separated by "
                              f"{sep!r}, got {len(parts)}", lineno)
      yield lineno, dict(zip(names, parts))
  return columns, rows()


def _require_columns(path: PathLike, columns: list[tuple[str, str]], required: dict[str, str]):
  have = dict(columns)
  for name, typ in required.items():
    if name not in have:
      raise DataFormatError(path, f"missing column '{name}:{typ}'; header has "
                            f"{[f'{n}:{t}' for n, t in columns]}", 1)
    if have[name] != typ:
      raise DataFormatError(path, f"column {name!r} must have type {typ!r}, got {have[name]!r}", 1)


def read_atomic(inter: PathLike | None = None, item: PathLike | None = None, *,
                test_inter: PathLike | None = None, valid_inter: PathLike | None = None,
                name: str = "atomic", sep: str = "\t", min_rating: float | None = None,
                ignore_columns: Sequence[str] = (), encoding: str = "utf-8",
                item_text: Sequence[Mapping[str, Any]] = ()) -> InteractionData:
  """Reads RecBole atomic files.

  Either `inter`, with columns `user_id:token`, `item_id:token` and optionally
  `timestamp:float` (orders each user's rows) and `rating:float` (fills `ratings`); or the
  sequential benchmark variant `test_inter` with `user_id:token`, `item_id_list:token_seq`
  (space-separated history, possibly capped) and `item_id:token`, one row per user. The
  sequential variant's user sequence is the test row's history + target; `valid_inter`, if
  given, must agree with it (its target is the test history's last item and its history ends
  like the test history does), and extends it by the older items it still holds when the test
  history was capped.

  Args:
    inter: `.inter` file with one interaction per row.
    item: `.item` file: `item_id:token` and text columns (e.g. `title:token_seq`).
    test_inter: sequential `.test.inter` file.
    valid_inter: sequential `.valid.inter` file, checked against `test_inter`.
    name: dataset name.
    sep: column separator.
    min_rating: keep rows with rating >= this (needs a rating column).
    ignore_columns: extra `.inter` columns to accept and ignore.
    encoding: text encoding.
    item_text: extra item-text join specs (see `read_item_text`).
  """
  if (inter is None) == (test_inter is None):
    raise ValueError("read_atomic needs exactly one of 'inter' (one interaction per row) or "
                     f"'test_inter' (sequential rows); got inter={inter}, test_inter={test_inter}")
  if valid_inter is not None and test_inter is None:
    raise ValueError("'valid_inter' is only read together with 'test_inter'")
  user_ids, item_ids = Ids(), Ids()
  if inter is not None:
    users, items, times, ratings = _read_atomic_inter(inter, sep, min_rating, ignore_columns,
                                                      encoding, user_ids, item_ids)
    source = inter
  else:
    users, items = _read_atomic_sequential(test_inter, valid_inter, sep, ignore_columns,
                                           encoding, user_ids, item_ids)
    times, ratings, source = None, None, test_inter
  tables = []
  if item is not None:
    tables.append(_read_atomic_item(item, sep, encoding))
  tables.append(joined_text(item_text))
  return assemble(name, users, items, user_ids.raw, item_ids.raw, times, merge_text(*tables),
                  source=source, ratings=ratings)


def _read_atomic_inter(path, sep, min_rating, ignore, encoding, user_ids, item_ids):
  known = ("user_id", "item_id", "timestamp", "rating")
  columns, rows = _atomic_rows(path, sep, known, ignore, encoding)
  names = dict(columns)
  if "item_id_list" in names:
    raise DataFormatError(path, "has an 'item_id_list' column: sequential atomic files are read "
                          "through the 'test_inter' (and 'valid_inter') files, not 'inter'", 1)
  _require_columns(path, columns, {"user_id": "token", "item_id": "token"})
  has_time, has_rating = "timestamp" in names, "rating" in names
  if min_rating is not None and not has_rating:
    raise ValueError(f"min_rating={min_rating} needs a 'rating' column in {path}")
  users, items, times, ratings = [], [], [], []
  seen = 0
  for lineno, row in rows:
    seen += 1
    if has_rating:
      rating = to_float(row["rating"], path, lineno, "rating")
      if min_rating is not None and rating < min_rating:
        continue
      ratings.append(rating)
    if has_time:
      times.append(to_timestamp(row["timestamp"], path, lineno))
    users.append(user_ids(row["user_id"].strip()))
    items.append(item_ids(row["item_id"].strip()))
  if not seen:
    raise DataFormatError(path, "file has no rows after the header")
  return (np.asarray(users, np.int64), np.asarray(items, np.int64),
          np.asarray(times, np.int64) if has_time else None,
          np.asarray(ratings, np.float32) if has_rating else None)


def _read_sequential_file(path, sep, ignore, encoding) -> dict[str, tuple[int, list[str], str]]:
  known = ("user_id", "item_id_list", "item_id", "item_length")
  columns, rows = _atomic_rows(path, sep, known, ignore, encoding)
  _require_columns(path, columns,
                   {"user_id": "token", "item_id_list": "token_seq", "item_id": "token"})
  out = {}
  for lineno, row in rows:
    user = row["user_id"].strip()
    if user in out:
      raise DataFormatError(path, f"user {user!r} has a second row (first on line "
                            f"{out[user][0]}); sequential files hold one row per user", lineno)
    target = row["item_id"].strip()
    if not target:
      raise DataFormatError(path, "empty item_id", lineno)
    out[user] = (lineno, row["item_id_list"].split(), target)
  if not out:
    raise DataFormatError(path, "file has no rows after the header")
  return out


def _read_atomic_sequential(test_path, valid_path, sep, ignore, encoding, user_ids, item_ids):
  test = _read_sequential_file(test_path, sep, ignore, encoding)
  valid = _read_sequential_file(valid_path, sep, ignore, encoding) if valid_path else {}
  for user in valid:
    if user not in test:
      raise DataFormatError(valid_path, f"user {user!r} has a validation row but no test row",
                            valid[user][0])
  users, items = [], []
  for user, (_, history, target) in test.items():
    sequence = history + [target]
    if user in valid:
      lineno, v_history, v_target = valid[user]
      if not history or v_target != history[-1]:
        raise DataFormatError(valid_path, f"user {user!r}: validation target {v_target!r} is not "
                              "the last item of the test history "
                              f"{history[-1:] or '(empty)'}", lineno)
      overlap = min(len(v_history), len(history) - 1)
      if overlap and v_history[-overlap:] != history[:-1][-overlap:]:
        raise DataFormatError(valid_path, f"user {user!r}: validation history does not end with "
                              "the test history's items before its last one", lineno)
      if len(v_history) + 2 > len(sequence):
        sequence = v_history + [v_target, target]
    code = user_ids(user)
    users.extend([code] * len(sequence))
    items.extend(item_ids.many(sequence))
  return np.asarray(users, np.int64), np.asarray(items, np.int64)


def _read_atomic_item(path, sep, encoding) -> dict[str, dict[str, str]]:
  columns, rows = _atomic_rows(path, sep, None, (), encoding)
  _require_columns(path, columns, {"item_id": "token"})
  fields = [c for c, _ in columns if c != "item_id"]
  tables = {f: {} for f in fields}
  for _, row in rows:
    key = row["item_id"].strip()
    for f in fields:
      tables[f][key] = clean_text(row[f])
  return tables
