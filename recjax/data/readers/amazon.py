"""Amazon Reviews (McAuley lab, 2014 and 2018 releases): review and metadata files."""
from __future__ import annotations

import ast
import json
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from recjax.data.canonical import InteractionData
from recjax.data.readers.assemble import assemble
from recjax.data.readers.common import (DataFormatError, Ids, PathLike, clean_text, read_lines,
                                        to_float, to_int)
from recjax.data.readers.item_text import joined_text, merge_text

AMAZON_ITEM_FIELDS = ("title", "brand", "categories", "description", "price")


def _json_records(path: PathLike, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, object) of a JSON-lines file; Python-literal lines (Amazon 2014) also parse."""
  for lineno, line in read_lines(path, encoding):
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
  user_ids, item_ids = Ids(), Ids()
  users, items, times, ratings, texts, summaries = [], [], [], [], [], []
  for lineno, record in _json_records(reviews, encoding):
    user = str(_required(record, "reviewerID", reviews, lineno))
    item = str(_required(record, "asin", reviews, lineno))
    time = to_int(str(_required(record, "unixReviewTime", reviews, lineno)), reviews, lineno,
                  "unixReviewTime")
    rating = to_float(str(_required(record, "overall", reviews, lineno)), reviews, lineno,
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
  tables.append(joined_text(item_text))
  return assemble(name, np.asarray(users), np.asarray(items), user_ids.raw, item_ids.raw,
                  np.asarray(times, np.int64), merge_text(*tables), source=reviews,
                  ratings=np.asarray(ratings, np.float32),
                  reviews={"review": texts, "summary": summaries})
