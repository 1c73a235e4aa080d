"""MovieLens releases: ml-100k, the `::` format (ml-1m, ml-10m) and the CSV format (ml-latest,
ml-20m, ml-25m, ml-32m)."""
from __future__ import annotations

import csv
import itertools
import zlib
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from recjax.data.canonical import InteractionData
from recjax.data.readers.assemble import assemble
from recjax.data.readers.common import (DataFormatError, Ids, PathLike, check_file, clean_text,
                                        open_text, raw_id, read_lines, strip_bom, to_float,
                                        to_int, to_timestamp)
from recjax.data.readers.interactions import read_interaction_rows
from recjax.data.readers.item_text import joined_text, merge_text

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


def _movielens_table(path: PathLike, sep: str, n_fields: int, layout: str, encoding: str):
  for lineno, line in read_lines(path, encoding):
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
  user_ids, item_ids = Ids(), Ids()
  u, i, t, r = read_interaction_rows(
      ratings, sep="\t", columns=("user", "item", "rating", "timestamp"), encoding=encoding,
      numeric_ids=True, min_rating=min_rating, user_ids=user_ids, item_ids=item_ids)
  text = {}
  if items is not None:
    text = {"title": {}, "genres": {}, "release_date": {}}
    for lineno, parts in _movielens_table(items, "|", 24, "id|title|release|video|url|19 genres",
                                          encoding):
      key = str(to_int(parts[0], items, lineno, "movie id"))
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
      key = str(to_int(parts[0], users, lineno, "user id"))
      features["age"][key] = to_int(parts[1], users, lineno, "age")
      features["gender"][key] = parts[2]
      features["occupation"][key] = parts[3]
      features["zip_code"][key] = parts[4]
  return assemble(name, u, i, user_ids.raw, item_ids.raw, t,
                  merge_text(text, joined_text(item_text)), features, source=ratings,
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
  user_ids, item_ids = Ids(), Ids()
  u, i, t, r = read_interaction_rows(
      ratings, sep="::", columns=("user", "item", "rating", "timestamp"), encoding=encoding,
      numeric_ids=True, min_rating=min_rating, user_ids=user_ids, item_ids=item_ids)
  text = {}
  if movies is not None:
    text = {"title": {}, "genres": {}}
    for lineno, parts in _movielens_table(movies, "::", 3, "MovieID::Title::Genres", encoding):
      key = str(to_int(parts[0], movies, lineno, "movie id"))
      text["title"][key] = clean_text(parts[1])
      text["genres"][key] = ", ".join(g for g in parts[2].split("|") if g)
  features = {}
  if users is not None:
    features = {"gender": {}, "age": {}, "occupation": {}, "zip_code": {}}
    for lineno, parts in _movielens_table(users, "::", 5,
                                          "UserID::Gender::Age::Occupation::Zip", encoding):
      key = str(to_int(parts[0], users, lineno, "user id"))
      occupation = to_int(parts[3], users, lineno, "occupation")
      if not 0 <= occupation < len(ML1M_OCCUPATIONS):
        raise DataFormatError(users, f"occupation code must be in 0..{len(ML1M_OCCUPATIONS) - 1}"
                              f", got {occupation}", lineno)
      features["gender"][key] = parts[1]
      features["age"][key] = to_int(parts[2], users, lineno, "age")
      features["occupation"][key] = ML1M_OCCUPATIONS[occupation]
      features["zip_code"][key] = parts[4]
  return assemble(name, u, i, user_ids.raw, item_ids.raw, t,
                  merge_text(text, joined_text(item_text)), features, source=ratings,
                  sort_by_time=sort_by_time, ratings=r)


def _check_order(order: str) -> bool:
  """Whether to sort each user's interactions by time (order="timestamp") or keep file order."""
  if order not in ("timestamp", "file"):
    raise ValueError(f"unknown order {order!r}; choose 'timestamp' or 'file'")
  return order == "timestamp"


# ----------------------------------------------------------------------------------------------
# The CSV format of ml-latest(-small), ml-20m, ml-25m and ml-32m.

ML_CSV_HEADERS = {
    "ratings": ("userId", "movieId", "rating", "timestamp"),
    "movies": ("movieId", "title", "genres"),
    "tags": ("userId", "movieId", "tag", "timestamp"),
}
ML_NO_GENRES = "(no genres listed)"


def _csv_chunks(path: PathLike, header: Sequence[str], encoding: str, size: int = 1 << 20
                ) -> Iterator[tuple[list[int], list[list[str]]]]:
  """(line numbers, rows) of a CSV file with a header, up to `size` rows at a time.

  Quoted fields may hold commas and line breaks; blank lines are skipped.
  """
  check_file(path)
  reader = None
  try:
    with open_text(path, encoding) as f:
      reader = csv.reader(f)
      first = next(reader, None)
      if first is None:
        raise DataFormatError(path, f"file is empty (expected the header {','.join(header)})")
      if first:
        first[0] = strip_bom(first[0])
      if [c.strip() for c in first] != list(header):
        raise DataFormatError(path, f"expected the header {','.join(header)}, got "
                              f"{','.join(first)[:120]!r}", 1)
      n = len(header)
      while True:
        before = reader.line_num
        rows = list(itertools.islice(reader, size))
        if not rows:
          return
        if reader.line_num - before == len(rows):  # one line per row: the common case
          lines = list(range(before + 1, reader.line_num + 1))
        else:  # quoted fields with line breaks
          spans = [1 + sum(field.count("\n") for field in row) for row in rows]
          lines = list(itertools.accumulate(spans, initial=before + 1))[:-1]
        if any(len(row) != n for row in rows):
          kept_lines, kept_rows = [], []
          for lineno, row in zip(lines, rows):
            if not row or (len(row) == 1 and not row[0].strip()):
              continue
            if len(row) != n:
              raise DataFormatError(path, f"expected {n} comma-separated fields "
                                    f"{','.join(header)}, got {len(row)} (quote fields that "
                                    "hold commas)", lineno)
            kept_lines.append(lineno)
            kept_rows.append(row)
          lines, rows = kept_lines, kept_rows
        yield lines, rows
  except UnicodeDecodeError as e:
    raise DataFormatError(path, f"cannot decode as {encoding} ({e.reason}); set the 'encoding' "
                          "option", _next_line(reader)) from None
  except csv.Error as e:
    raise DataFormatError(path, f"malformed CSV ({e})", _next_line(reader)) from None
  except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz
    raise DataFormatError(path, f"cannot read the file ({type(e).__name__}: {e})",
                          _next_line(reader)) from None


def _next_line(reader) -> int:
  return 1 if reader is None else reader.line_num + 1


def _csv_rows(path: PathLike, header: Sequence[str], encoding: str
              ) -> Iterator[tuple[int, list[str]]]:
  """(line number, fields) of each row of a CSV file with a header."""
  for lines, rows in _csv_chunks(path, header, encoding):
    yield from zip(lines, rows)


def read_movielens_csv(ratings: PathLike, movies: PathLike | None = None,
                       tags: PathLike | None = None, *, name: str = "ml-latest-small",
                       min_rating: float | None = None, order: str = "timestamp",
                       encoding: str = "utf-8",
                       item_text: Sequence[Mapping[str, Any]] = ()) -> InteractionData:
  """Reads a MovieLens release in the CSV format (ml-latest-small, ml-20m, ml-25m, ml-32m).

  Each rating is an interaction and keeps its value (0.5..5 stars) in `ratings`. The tags a user
  gave a movie they rated become that interaction's `reviews["tags"]` (distinct tags joined with
  ", ", oldest first; "" where there are none). Tags on movies the user did not rate (or rated
  below `min_rating`) are not interactions here: they are counted in `report` and left out.

  Args:
    ratings: `ratings.csv`, header `userId,movieId,rating,timestamp`.
    movies: `movies.csv`, header `movieId,title,genres` (titles with commas are quoted; genres
      `Action|Drama`, or "(no genres listed)"), or None. Gives item text fields "title" and
      "genres" (", "-joined).
    tags: `tags.csv`, header `userId,movieId,tag,timestamp`, or None.
    name: dataset name.
    min_rating: keep ratings >= this.
    order: "timestamp" (stable on file order) or "file".
    encoding: text encoding of the files (the releases are UTF-8).
    item_text: extra item-text join specs (see `read_item_text`).
  """
  sort_by_time = _check_order(order)
  user_num, movie_num, values, times = _rating_columns(ratings, encoding)
  if min_rating is not None:
    keep = values >= min_rating
    user_num, movie_num, values, times = (user_num[keep], movie_num[keep], values[keep],
                                          times[keep])
  report = []
  reviews = None
  if tags is not None:
    tag_text, unrated, total = _tags_of_ratings(tags, encoding, user_num, movie_num)
    reviews = {"tags": tag_text}
    if unrated:
      report.append(f"{unrated:,} of {total:,} tags are on movies their user did not rate"
                    f"{' (or rated below min_rating)' if min_rating is not None else ''}; "
                    "left out")
  text = {}
  if movies is not None:
    text = {"title": {}, "genres": {}}
    for lineno, (m, title, genres) in _csv_rows(movies, ML_CSV_HEADERS["movies"], encoding):
      key = raw_id(m.strip(), True, movies, lineno, "movieId")
      text["title"][key] = clean_text(title)
      text["genres"][key] = ", ".join(
          g for g in genres.split("|") if g.strip() and g.strip() != ML_NO_GENRES)
  users, user_raw = _first_appearance_codes(user_num)
  items, item_raw = _first_appearance_codes(movie_num)
  return assemble(name, users, items, user_raw, item_raw, times,
                  merge_text(text, joined_text(item_text)), source=ratings,
                  sort_by_time=sort_by_time, ratings=values, reviews=reviews, report=report)


def _rating_columns(path: PathLike, encoding: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(userId int64, movieId int64, rating float32, timestamp int64) columns of ratings.csv."""
  parts = []
  for lines, rows in _csv_chunks(path, ML_CSV_HEADERS["ratings"], encoding):
    if not rows:
      continue
    u, m, r, t = zip(*rows)
    parts.append((_int_column(u, lines, path, "userId"), _int_column(m, lines, path, "movieId"),
                  _float_column(r, lines, path, "rating"), _time_column(t, lines, path)))
  if not parts:
    return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
            np.zeros(0, np.int64))
  return tuple(np.concatenate(c) for c in zip(*parts))


def _int_column(tokens: Sequence[str], lines: Sequence[int], path: PathLike, what: str
                ) -> np.ndarray:
  """Non-negative integer ids; a bad token raises DataFormatError naming its line."""
  try:
    values = np.fromiter(map(int, tokens), np.int64, len(tokens))
  except (ValueError, OverflowError):
    for token, lineno in zip(tokens, lines):
      if not -2**63 <= to_int(token, path, lineno, what) < 2**63:
        raise DataFormatError(path, f"{what} {token.strip()!r} is out of range", lineno) from None
    raise
  negative = np.flatnonzero(values < 0)
  if len(negative):
    k = int(negative[0])
    raise DataFormatError(path, f"{what} must be a non-negative integer, got "
                          f"{tokens[k].strip()!r}", lines[k])
  return values


def _float_column(tokens: Sequence[str], lines: Sequence[int], path: PathLike, what: str
                  ) -> np.ndarray:
  """Numbers; a bad token raises DataFormatError naming its line."""
  try:
    return np.fromiter(map(float, tokens), np.float32, len(tokens))
  except ValueError:
    for token, lineno in zip(tokens, lines):
      to_float(token, path, lineno, what)
    raise


def _time_column(tokens: Sequence[str], lines: Sequence[int], path: PathLike) -> np.ndarray:
  """Unix seconds (integers, or numbers cut to integers)."""
  try:
    return np.fromiter(map(int, tokens), np.int64, len(tokens))
  except (ValueError, OverflowError):
    return np.fromiter((to_timestamp(t.strip(), path, n) for t, n in zip(tokens, lines)),
                       np.int64, len(tokens))


def _first_appearance_codes(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
  """Codes 0.. in order of first appearance, and the raw id (str) of each code."""
  unique, first, inverse = np.unique(values, return_index=True, return_inverse=True)
  order = np.argsort(first, kind="stable")
  rank = np.empty(len(unique), np.int64)
  rank[order] = np.arange(len(unique))
  return rank[inverse.reshape(-1)], [str(v) for v in unique[order].tolist()]


def _tags_of_ratings(path: PathLike, encoding: str, user_num: np.ndarray, movie_num: np.ndarray
                     ) -> tuple[np.ndarray, int, int]:
  """Each rating's tags (distinct, oldest first, ", "-joined; "" for none), the number of tags
  on pairs without a rating, and the number of tags."""
  given: dict[tuple[int, int], list[tuple[int, str]]] = {}
  for lineno, (u, m, tag, t) in _csv_rows(path, ML_CSV_HEADERS["tags"], encoding):
    tag = clean_text(tag)
    if tag:
      key = (int(raw_id(u.strip(), True, path, lineno, "userId")),
             int(raw_id(m.strip(), True, path, lineno, "movieId")))
      given.setdefault(key, []).append((to_timestamp(t.strip(), path, lineno), tag))
  text = np.full(len(user_num), "", dtype=object)
  total = sum(len(v) for v in given.values())
  if not given:
    return text, 0, total
  pairs = np.array(list(given), np.int64).reshape(-1, 2)
  base = int(max(movie_num.max(initial=0), pairs[:, 1].max())) + 1
  tag_keys = pairs[:, 0] * base + pairs[:, 1]
  rating_keys = user_num * base + movie_num
  rated = np.isin(tag_keys, rating_keys)
  tagged = list(given.values())
  unrated = sum(len(tagged[k]) for k in np.flatnonzero(~rated))
  order = np.argsort(tag_keys, kind="stable")
  at = np.minimum(np.searchsorted(tag_keys[order], rating_keys), len(order) - 1)
  hit = tag_keys[order][at] == rating_keys
  joined = [", ".join(dict.fromkeys(tag for _, tag in sorted(v, key=lambda x: x[0])))
            for v in tagged]
  for row, k in zip(np.flatnonzero(hit).tolist(), order[at[hit]].tolist()):
    text[row] = joined[k]
  return text, unrated, total
