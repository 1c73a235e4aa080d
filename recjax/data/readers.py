"""Readers: raw dataset files -> one canonical `InteractionData`.

Supported formats (docs/data_formats.md shows an example file of each):
- MovieLens raw releases: ml-100k (`u.data`, `u.item`, `u.user`) and the `::` format of ml-1m
  and ml-10m (`ratings.dat`, `movies.dat`, `users.dat`).
- sequence files: one user per line, `user item item ...`, oldest item first.
- pair files: one interaction per line (`user item`, optionally with rating/timestamp columns),
  chronological per user unless a timestamp column orders them.
- LC-Rec JSON: `X.inter.json` `{"user": [item, ...]}` + `X.item.json` `{"item": {field: text}}`.
- RecBole atomic files: `name:type` header; `.inter` rows (`user_id item_id [timestamp] [rating]`)
  or the sequential benchmark variant (`user_id item_id_list item_id`), `.item` text table.
- Amazon Reviews (McAuley lab, 2014 and 2018 releases): the per-category review files
  (`Office_Products_5.json.gz`: one JSON review per line) and metadata files
  (`meta_Office_Products.json.gz`; the 2014 release writes Python literals instead of JSON).
- item-text join files (delimited or JSON) that add text fields to any of the above.
Files whose name ends in `.gz` are decompressed on the fly.

Every reader numbers users 0.. in order of first appearance in the interaction file, orders each
user's interactions by time (stable, so equal times keep file order), numbers items 1.. in order of
first appearance when the users' sequences are read one after another, and keeps the raw ids.
Ratings (MovieLens, a pairs file's "rating" column, an atomic `rating:float` column, Amazon's
"overall") are kept in `InteractionData.ratings`, and Amazon's review text and summary in
`InteractionData.reviews`, aligned with the items like the timestamps.
Malformed input raises `DataFormatError` naming the file, the line and the problem.
"""
from __future__ import annotations

import ast
import gzip
import html
import json
import os
import re
import zlib
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from recjax.data.canonical import InteractionData, Sequences

PathLike = str | os.PathLike

# Variable-width numpy strings: item descriptions reach 40k characters, and a fixed-width '<U'
# array would pad every item to that.
TEXT_DTYPE = np.dtypes.StringDType()

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western")

# ml-1m README: users.dat occupation codes.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer")

INTERACTION_COLUMNS = ("user", "item", "rating", "timestamp", "-")
ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")
TEXT_JOIN_KEYS = ("file", "format", "sep", "columns", "encoding", "id_offset", "header",
                  "list_fields", "field", "optional")


class DataFormatError(ValueError):
  """A data file is malformed or missing; the message names the file, the line and the problem."""

  def __init__(self, path: PathLike, problem: str, line: int | None = None):
    self.path = str(path)
    self.line = line
    self.problem = problem
    where = self.path if line is None else f"{self.path}:{line}"
    super().__init__(f"{where}: {problem}")


class MissingDataError(DataFormatError):
  """A file or directory that a dataset needs does not exist."""


# ----------------------------------------------------------------------------------------------
# Text and line helpers.

_MOJIBAKE = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6"
    "\u02dc\u2013-\u203a\u20ac\u2122]{1,3}")


def _unmangle(match: re.Match) -> str:
  try:
    return match.group().encode("cp1252").decode("utf-8")
  except UnicodeError:
    return match.group()


def clean_text(text: str) -> str:
  """Undoes HTML escapes and UTF-8-read-as-cp1252 mojibake, and collapses whitespace."""
  if "&" in text:
    text = html.unescape(text)
  if _MOJIBAKE.search(text):
    text = _MOJIBAKE.sub(_unmangle, text)
  # A UTF-8 no-break space whose second byte was lost upstream leaves a lone "Â".
  text = re.sub("\u00c2(?=\\s)", "", text)
  return " ".join(text.split())


def _check_file(path: PathLike) -> None:
  if not os.path.exists(path):
    raise MissingDataError(path, "file not found")
  if os.path.isdir(path):
    raise DataFormatError(path, "expected a file, found a directory")


def _open_text(path: PathLike, encoding: str):
  """A text file, decompressed on the fly when its name ends in .gz."""
  if os.fspath(path).endswith(".gz"):
    return gzip.open(path, "rt", encoding=encoding, newline=None)
  return open(path, encoding=encoding, newline=None)


def _lines(path: PathLike, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, line without its newline), skipping blank lines."""
  _check_file(path)
  lineno = 0
  try:
    with _open_text(path, encoding) as f:
      for lineno, line in enumerate(f, start=1):
        line = line.rstrip("\r\n")
        if line.strip():
          yield lineno, line
  except UnicodeDecodeError as e:
    raise DataFormatError(path, f"cannot decode as {encoding} ({e.reason}); set the 'encoding' "
                          "option (MovieLens files are latin-1)", lineno + 1) from None
  except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz
    raise DataFormatError(path, f"cannot read the file ({type(e).__name__}: {e})",
                          lineno + 1) from None


def _split(line: str, sep: str | None) -> list[str]:
  return line.split() if sep is None else line.split(sep)


def _int(token: str, path: PathLike, lineno: int | None, what: str) -> int:
  try:
    return int(token)
  except ValueError:
    raise DataFormatError(path, f"{what} must be an integer, got {token!r}", lineno) from None


def _float(token: str, path: PathLike, lineno: int | None, what: str) -> float:
  try:
    return float(token)
  except ValueError:
    raise DataFormatError(path, f"{what} must be a number, got {token!r}", lineno) from None


def _numeric_ids(tokens: list[str], path: PathLike, lineno: int) -> list[str]:
  try:
    return [str(int(t)) for t in tokens]
  except ValueError:
    bad = next(t for t in tokens if not t.strip().lstrip("+-").isdigit())
    raise DataFormatError(path, f"item id must be an integer, got {bad!r}", lineno) from None


def _raw_id(token: str, numeric: bool, path: PathLike, lineno: int | None, what: str) -> str:
  # Numeric ids are normalised ("007" -> "7") so that files written differently still join.
  return str(_int(token, path, lineno, what)) if numeric else token


class _Ids:
  """Raw id -> code, codes given in order of first appearance."""

  def __init__(self):
    self.codes: dict[str, int] = {}

  def __call__(self, raw: str) -> int:
    codes = self.codes
    return codes.setdefault(raw, len(codes))

  def many(self, raws: Sequence[str]) -> list[int]:
    codes = self.codes
    setdefault = codes.setdefault
    return [setdefault(raw, len(codes)) for raw in raws]

  @property
  def raw(self) -> list[str]:
    return list(self.codes)


# ----------------------------------------------------------------------------------------------
# Assembly of the canonical form.


def _assemble(name: str, users: np.ndarray, items: np.ndarray, user_raw: Sequence[str],
              item_raw: Sequence[str], timestamps: np.ndarray | None = None,
              item_text: Mapping[str, Mapping[str, str]] | None = None,
              user_features: Mapping[str, Mapping[str, Any]] | None = None,
              source: PathLike = "", sort_by_time: bool = True,
              ratings: np.ndarray | None = None,
              reviews: Mapping[str, Sequence[str]] | None = None) -> InteractionData:
  """Builds `InteractionData` from per-interaction user/item codes in file order.

  `timestamps`, `ratings` and each `reviews` column, when given, hold one value per interaction
  in the same file order and are reordered together with the items.
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
  )


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
  user_ids, item_ids = _Ids(), _Ids()
  user_codes = np.fromiter((user_ids(str(u)) for u in users), np.int64, len(users))
  item_codes = np.fromiter((item_ids(str(i)) for i in items), np.int64, len(items))
  return _assemble(name, user_codes, item_codes, user_ids.raw, item_ids.raw,
                   None if timestamps is None else np.asarray(timestamps, np.int64),
                   item_text, user_features, source=name,
                   ratings=None if ratings is None else np.asarray(ratings, np.float32))


# ----------------------------------------------------------------------------------------------
# Item text join files.


def read_item_text(join: Mapping[str, Any]) -> dict[str, dict[str, str]]:
  """Reads one item-text join file into field -> {raw item id: cleaned text}.

  `join` keys: `file` (path); `format`: "delimited" (default) or "json"; for delimited files
  `sep` (default tab), `columns` (names, one of them "item_id"; "-" skips a column), `header`
  (skip the first line), `encoding` (default utf-8), `list_fields` ({column: separator}: split
  the column on the separator and rejoin with ", "); for JSON files `field` names the text field
  when values are strings or lists rather than objects; `id_offset` (int added to numeric item
  ids so they match the interaction file's ids); `optional` (read by the registry: skip the join
  when the file is absent).
  """
  unknown = sorted(set(join) - set(TEXT_JOIN_KEYS))
  if unknown:
    raise ValueError(f"unknown item_text key(s) {unknown}; valid keys: {list(TEXT_JOIN_KEYS)}")
  if "file" not in join:
    raise ValueError(f"item_text entry {dict(join)} has no 'file'")
  path = join["file"]
  fmt = join.get("format", "delimited")
  offset = int(join.get("id_offset", 0))
  list_fields = dict(join.get("list_fields") or {})

  def item_key(token, lineno):
    token = str(token).strip()
    if offset:
      return str(_int(token, path, lineno, "item id") + offset)
    return token

  def text(field, value):
    if isinstance(value, (list, tuple)):
      return clean_text(", ".join(str(v) for v in value))
    value = "" if value is None else str(value)
    if field in list_fields:
      value = ", ".join(p for p in value.split(list_fields[field]) if p)
    return clean_text(value)

  tables: dict[str, dict[str, str]] = {}
  if fmt == "json":
    data = _load_json(path, join.get("encoding", "utf-8"))
    if not isinstance(data, dict):
      raise DataFormatError(path, f"expected a JSON object {{item: {{field: text}}}}, got "
                            f"{type(data).__name__}")
    field_name = join.get("field", "text")
    for raw, value in data.items():
      key = item_key(raw, None)
      fields = value if isinstance(value, dict) else {field_name: value}
      for field, v in fields.items():
        tables.setdefault(field, {})[key] = text(field, v)
    return tables
  if fmt != "delimited":
    raise ValueError(f"unknown item_text format {fmt!r} for {path}; choose 'delimited' or 'json'")
  columns = list(join.get("columns") or ["item_id", "title"])
  if "item_id" not in columns:
    raise ValueError(f"item_text columns {columns} for {path} must include 'item_id'")
  sep = join.get("sep", "\t")
  lines = _lines(path, join.get("encoding", "utf-8"))
  if join.get("header", False):
    next(lines, None)
  id_col = columns.index("item_id")
  for lineno, line in lines:
    parts = _split(line, sep)
    if len(parts) != len(columns):
      raise DataFormatError(path, f"expected {len(columns)} fields {columns} separated by "
                            f"{sep!r}, got {len(parts)}", lineno)
    key = item_key(parts[id_col], lineno)
    for col, value in zip(columns, parts):
      if col not in ("item_id", "-"):
        tables.setdefault(col, {})[key] = text(col, value)
  return tables


def _merge_text(*tables: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
  """Merges text tables; a later non-empty value replaces an earlier one."""
  merged: dict[str, dict[str, str]] = {}
  for table in tables:
    for field, values in table.items():
      target = merged.setdefault(field, {})
      for key, value in values.items():
        if value or key not in target:
          target[key] = value
  return merged


def _joined_text(item_text: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
  return _merge_text(*(read_item_text(j) for j in item_text))


def _load_json(path: PathLike, encoding: str = "utf-8") -> Any:
  _check_file(path)
  try:
    with open(path, encoding=encoding) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataFormatError(path, f"invalid JSON: {e.msg} (column {e.colno})", e.lineno) from None
  except UnicodeDecodeError as e:
    raise DataFormatError(path, f"cannot decode as {encoding} ({e.reason})") from None


# ----------------------------------------------------------------------------------------------
# Interaction files.


def _read_interaction_rows(path: PathLike, *, sep: str | None, columns: Sequence[str],
                           header: bool = False, encoding: str = "utf-8",
                           numeric_ids: bool = False, min_rating: float | None = None,
                           user_ids: _Ids, item_ids: _Ids):
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
  lines = _lines(path, encoding)
  if header:
    next(lines, None)
  n = len(columns)
  shown = " ".join(columns)
  seen = 0
  for lineno, line in lines:
    seen += 1
    parts = _split(line, sep)
    if len(parts) != n:
      raise DataFormatError(path, f"expected {n} fields '{shown}' separated by "
                            f"{'whitespace' if sep is None else repr(sep)}, got {len(parts)}: "
                            f"{line[:80]!r}", lineno)
    if r_col is not None:
      rating = _float(parts[r_col], path, lineno, "rating")
      if min_rating is not None and rating < min_rating:
        continue
      ratings.append(rating)
    if t_col is not None:
      times.append(_timestamp(parts[t_col], path, lineno))
    users.append(user_ids(_raw_id(parts[u_col].strip(), numeric_ids, path, lineno, "user id")))
    items.append(item_ids(_raw_id(parts[i_col].strip(), numeric_ids, path, lineno, "item id")))
  if not seen:
    raise DataFormatError(path, "file has no interactions")
  return (np.asarray(users, np.int64), np.asarray(items, np.int64),
          None if t_col is None else np.asarray(times, np.int64),
          None if r_col is None else np.asarray(ratings, np.float32))


def _timestamp(token: str, path: PathLike, lineno: int | None) -> int:
  try:
    return int(token)
  except ValueError:
    return int(_float(token, path, lineno, "timestamp"))


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
  user_ids, item_ids = _Ids(), _Ids()
  users, items, times, ratings = _read_interaction_rows(
      interactions, sep=sep, columns=columns, header=header, encoding=encoding,
      numeric_ids=numeric_ids, min_rating=min_rating, user_ids=user_ids, item_ids=item_ids)
  return _assemble(name, users, items, user_ids.raw, item_ids.raw, times,
                   _joined_text(item_text), source=interactions, ratings=ratings)


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
  user_ids, item_ids = _Ids(), _Ids()
  users, items = [], []
  for lineno, line in _lines(sequences, encoding):
    parts = _split(line, sep)
    if len(parts) < 2:
      raise DataFormatError(sequences, "expected 'user item [item ...]' (at least 2 fields), "
                            f"got {len(parts)}: {line[:80]!r}", lineno)
    user = user_ids(_raw_id(parts[0].strip(), numeric_ids, sequences, lineno, "user id"))
    tokens = parts[1:] if sep is None else [t.strip() for t in parts[1:]]
    if numeric_ids:
      tokens = _numeric_ids(tokens, sequences, lineno)
    items.extend(item_ids.many(tokens))
    users.extend([user] * len(tokens))
  if not users:
    raise DataFormatError(sequences, "file has no interactions")
  return _assemble(name, np.asarray(users), np.asarray(items), user_ids.raw, item_ids.raw,
                   None, _joined_text(item_text), source=sequences)


# ----------------------------------------------------------------------------------------------
# MovieLens.


def _movielens_table(path: PathLike, sep: str, n_fields: int, layout: str, encoding: str):
  for lineno, line in _lines(path, encoding):
    parts = line.split(sep)
    if len(parts) != n_fields:
      raise DataFormatError(path, f"expected {n_fields} fields ({layout}) separated by {sep!r}, "
                            f"got {len(parts)}", lineno)
    yield lineno, parts


def read_movielens_100k(ratings: PathLike, items: PathLike | None = None,
                        users: PathLike | None = None, *, name: str = "ml-100k",
                        min_rating: float | None = None, order: str = "timestamp",
                        encoding: str = "latin-1",
                        item_text: Sequence[Mapping[str, Any]] = ()) -> InteractionData:
  """Reads the raw MovieLens 100K release, keeping each interaction's rating (1..5 stars).

  Args:
    ratings: `u.data`, `user<TAB>item<TAB>rating<TAB>unix_ts`.
    items: `u.item`, `id|title|release date|video release date|url|19 genre flags`, or None.
      Gives item text fields "title", "genres" (", "-joined) and "release_date".
    users: `u.user`, `id|age|gender|occupation|zip`, or None. Gives user features "age" (int),
      "gender", "occupation", "zip_code".
    name: dataset name.
    min_rating: keep ratings >= this (e.g. 4 for "positive" interactions).
    order: "timestamp" (stable on file order) or "file".
    encoding: text encoding of the files (the release is latin-1).
    item_text: extra item-text join specs (see `read_item_text`).
  """
  sort_by_time = _check_order(order)
  user_ids, item_ids = _Ids(), _Ids()
  u, i, t, r = _read_interaction_rows(
      ratings, sep="\t", columns=("user", "item", "rating", "timestamp"), encoding=encoding,
      numeric_ids=True, min_rating=min_rating, user_ids=user_ids, item_ids=item_ids)
  text = {}
  if items is not None:
    text = {"title": {}, "genres": {}, "release_date": {}}
    for lineno, parts in _movielens_table(items, "|", 24, "id|title|release|video|url|19 genres",
                                          encoding):
      key = str(_int(parts[0], items, lineno, "movie id"))
      flags = parts[5:]
      if any(f not in ("0", "1") for f in flags):
        raise DataFormatError(items, f"genre flags must be 0 or 1, got {flags}", lineno)
      text["title"][key] = clean_text(parts[1])
      text["genres"][key] = ", ".join(g for g, f in zip(ML100K_GENRES, flags) if f == "1")
      text["release_date"][key] = clean_text(parts[2])
  features = {}
  if users is not None:
    features = {"age": {}, "gender": {}, "occupation": {}, "zip_code": {}}
    for lineno, parts in _movielens_table(users, "|", 5, "id|age|gender|occupation|zip",
                                          encoding):
      key = str(_int(parts[0], users, lineno, "user id"))
      features["age"][key] = _int(parts[1], users, lineno, "age")
      features["gender"][key] = parts[2]
      features["occupation"][key] = parts[3]
      features["zip_code"][key] = parts[4]
  return _assemble(name, u, i, user_ids.raw, item_ids.raw, t,
                   _merge_text(text, _joined_text(item_text)), features, source=ratings,
                   sort_by_time=sort_by_time, ratings=r)


def read_movielens_1m(ratings: PathLike, movies: PathLike | None = None,
                      users: PathLike | None = None, *, name: str = "ml-1m",
                      min_rating: float | None = None, order: str = "timestamp",
                      encoding: str = "latin-1",
                      item_text: Sequence[Mapping[str, Any]] = ()) -> InteractionData:
  """Reads a MovieLens release in the `::` format (ml-1m; ml-10m without users.dat).

  Each interaction keeps its rating (1..5 stars; half stars in ml-10m) in `ratings`.

  Args:
    ratings: `ratings.dat`, `UserID::MovieID::Rating::Timestamp`.
    movies: `movies.dat`, `MovieID::Title (Year)::Genre|Genre`, or None. Gives item text fields
      "title" and "genres" (", "-joined).
    users: `users.dat`, `UserID::Gender::Age::Occupation::Zip`, or None. Gives user features
      "gender", "age" (the age-bucket code), "occupation" (name), "zip_code".
    name: dataset name.
    min_rating: keep ratings >= this.
    order: "timestamp" (stable on file order) or "file".
    encoding: text encoding of the files (the release is latin-1).
    item_text: extra item-text join specs (see `read_item_text`).
  """
  sort_by_time = _check_order(order)
  user_ids, item_ids = _Ids(), _Ids()
  u, i, t, r = _read_interaction_rows(
      ratings, sep="::", columns=("user", "item", "rating", "timestamp"), encoding=encoding,
      numeric_ids=True, min_rating=min_rating, user_ids=user_ids, item_ids=item_ids)
  text = {}
  if movies is not None:
    text = {"title": {}, "genres": {}}
    for lineno, parts in _movielens_table(movies, "::", 3, "MovieID::Title::Genres", encoding):
      key = str(_int(parts[0], movies, lineno, "movie id"))
      text["title"][key] = clean_text(parts[1])
      text["genres"][key] = ", ".join(g for g in parts[2].split("|") if g)
  features = {}
  if users is not None:
    features = {"gender": {}, "age": {}, "occupation": {}, "zip_code": {}}
    for lineno, parts in _movielens_table(users, "::", 5,
                                          "UserID::Gender::Age::Occupation::Zip", encoding):
      key = str(_int(parts[0], users, lineno, "user id"))
      occupation = _int(parts[3], users, lineno, "occupation")
      if not 0 <= occupation < len(ML1M_OCCUPATIONS):
        raise DataFormatError(users, f"occupation code must be in 0..{len(ML1M_OCCUPATIONS) - 1}"
                              f", got {occupation}", lineno)
      features["gender"][key] = parts[1]
      features["age"][key] = _int(parts[2], users, lineno, "age")
      features["occupation"][key] = ML1M_OCCUPATIONS[occupation]
      features["zip_code"][key] = parts[4]
  return _assemble(name, u, i, user_ids.raw, item_ids.raw, t,
                   _merge_text(text, _joined_text(item_text)), features, source=ratings,
                   sort_by_time=sort_by_time, ratings=r)


def _check_order(order: str) -> bool:
  """Whether to sort each user's interactions by time (order="timestamp") or keep file order."""
  if order not in ("timestamp", "file"):
    raise ValueError(f"unknown order {order!r}; choose 'timestamp' or 'file'")
  return order == "timestamp"


# ----------------------------------------------------------------------------------------------
# LC-Rec JSON.


def read_lcrec_json(inter: PathLike, item: PathLike | None = None, *, name: str = "lcrec",
                    item_text: Sequence[Mapping[str, Any]] = ()) -> InteractionData:
  """Reads LC-Rec's `X.inter.json` {"user": [item, ...]} and optional `X.item.json`.

  Item ids are integers (0-indexed in LC-Rec's releases); each user's list is chronological.
  `X.item.json` maps item id -> {"title", "description", "brand", "categories", ...}; every field
  becomes an item text field.
  """
  data = _load_json(inter)
  if not isinstance(data, dict):
    raise DataFormatError(inter, "expected a JSON object {user: [item, ...]}, got "
                          f"{type(data).__name__}")
  if not data:
    raise DataFormatError(inter, "file has no interactions")
  user_ids, item_ids = _Ids(), _Ids()
  users, items = [], []
  for raw_user, seq in data.items():
    if not isinstance(seq, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in seq):
      raise DataFormatError(inter, f"user {raw_user!r}: expected a list of integer item ids, got "
                            f"{str(seq)[:80]}")
    user = user_ids(str(raw_user))
    users.extend([user] * len(seq))
    items.extend(item_ids.many([str(x) for x in seq]))
  tables = [read_item_text({"file": item, "format": "json"})] if item is not None else []
  tables.append(_joined_text(item_text))
  return _assemble(name, np.asarray(users), np.asarray(items), user_ids.raw, item_ids.raw,
                   None, _merge_text(*tables), source=inter)


# ----------------------------------------------------------------------------------------------
# Amazon Reviews (McAuley lab) review and metadata files.

AMAZON_ITEM_FIELDS = ("title", "brand", "categories", "description", "price")


def _json_records(path: PathLike, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, object) of a JSON-lines file; Python-literal lines (Amazon 2014) also parse."""
  for lineno, line in _lines(path, encoding):
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      try:
        record = ast.literal_eval(line)
      except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise DataFormatError(path, f"not a JSON object: {e.msg} (column {e.colno})",
                              lineno) from None
    if not isinstance(record, dict):
      raise DataFormatError(path, f"expected a JSON object per line, got "
                            f"{type(record).__name__}", lineno)
    yield lineno, record


def _required(record: Mapping[str, Any], key: str, path: PathLike, lineno: int) -> Any:
  if key not in record or record[key] in (None, ""):
    raise DataFormatError(path, f"record has no {key!r} (keys: {sorted(record)[:12]})", lineno)
  return record[key]


def _amazon_item_text(record: Mapping[str, Any]) -> dict[str, str]:
  """Text fields of one metadata record (2018: `category` list, `description` list; 2014:
  `categories` list of lists, `description` string)."""
  def flat(value) -> list[str]:
    if isinstance(value, (list, tuple)):
      return [x for v in value for x in flat(v)]
    return [] if value is None else [str(value)]

  categories = flat(record.get("category") or record.get("categories") or [])
  categories = list(dict.fromkeys(c.strip() for c in categories if c.strip()))
  price = record.get("price", "")
  if isinstance(price, (int, float)) and not isinstance(price, bool):
    price = f"${price:.2f}"
  text = {"title": " ".join(flat(record.get("title"))),
          "brand": " ".join(flat(record.get("brand"))),
          "categories": ", ".join(categories),
          "description": " ".join(flat(record.get("description"))),
          # 2018 pages without a price hold CSS/JS fragments in this field.
          "price": price if isinstance(price, str) and price.startswith("$") else ""}
  return {k: clean_text(v) for k, v in text.items()}


def read_amazon_reviews(reviews: PathLike, meta: PathLike | None = None, *,
                        name: str = "amazon", min_rating: float | None = None,
                        encoding: str = "utf-8",
                        item_text: Sequence[Mapping[str, Any]] = ()) -> InteractionData:
  """Reads an Amazon Reviews review file and, optionally, its metadata file.

  Each review line needs `reviewerID`, `asin`, `unixReviewTime` and `overall` (1-5 stars, the
  rating); `reviewText` and `summary` become `reviews["review"]` and
  `reviews["summary"]`. Interactions are ordered by time per user (equal times keep file order).
  Metadata lines (`asin` plus any of `title`, `brand`, `category`/`categories`, `description`,
  `price`) give the item text fields AMAZON_ITEM_FIELDS; metadata of items without reviews is
  ignored.

  Args:
    reviews: the review file (e.g. `Office_Products_5.json.gz`, the official 5-core subset).
    meta: the metadata file (e.g. `meta_Office_Products.json.gz`), or None.
    name: dataset name.
    min_rating: keep reviews whose `overall` is >= this.
    encoding: text encoding of both files.
    item_text: further item-text join specs (see `read_item_text`).
  """
  user_ids, item_ids = _Ids(), _Ids()
  users, items, times, ratings, texts, summaries = [], [], [], [], [], []
  for lineno, record in _json_records(reviews, encoding):
    user = str(_required(record, "reviewerID", reviews, lineno))
    item = str(_required(record, "asin", reviews, lineno))
    time = _int(str(_required(record, "unixReviewTime", reviews, lineno)), reviews, lineno,
                "unixReviewTime")
    rating = _float(str(_required(record, "overall", reviews, lineno)), reviews, lineno,
                    "overall")
    if min_rating is not None and rating < min_rating:
      continue
    users.append(user_ids(user))
    items.append(item_ids(item))
    times.append(time)
    ratings.append(rating)
    texts.append(clean_text(str(record.get("reviewText") or "")))
    summaries.append(clean_text(str(record.get("summary") or "")))
  tables = []
  if meta is not None:
    wanted = set(item_ids.raw)
    table: dict[str, dict[str, str]] = {f: {} for f in AMAZON_ITEM_FIELDS}
    for lineno, record in _json_records(meta, encoding):
      asin = str(_required(record, "asin", meta, lineno))
      if asin in wanted:
        for field, value in _amazon_item_text(record).items():
          table[field][asin] = value
    tables.append(table)
  tables.append(_joined_text(item_text))
  return _assemble(name, np.asarray(users), np.asarray(items), user_ids.raw, item_ids.raw,
                   np.asarray(times, np.int64), _merge_text(*tables), source=reviews,
                   ratings=np.asarray(ratings, np.float32),
                   reviews={"review": texts, "summary": summaries})


# ----------------------------------------------------------------------------------------------
# RecBole atomic files.


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
  lines = _lines(path, encoding)
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
  user_ids, item_ids = _Ids(), _Ids()
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
  tables.append(_joined_text(item_text))
  return _assemble(name, users, items, user_ids.raw, item_ids.raw, times, _merge_text(*tables),
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
      rating = _float(row["rating"], path, lineno, "rating")
      if min_rating is not None and rating < min_rating:
        continue
      ratings.append(rating)
    if has_time:
      times.append(_timestamp(row["timestamp"], path, lineno))
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
