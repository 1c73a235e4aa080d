"""LC-Rec JSON: `X.inter.json` {"user": [item, ...]} and `X.item.json` {"item": {field: text}}."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from recjax.data.canonical import InteractionData
from recjax.data.readers.assemble import assemble
from recjax.data.readers.common import DataFormatError, Ids, PathLike
from recjax.data.readers.item_text import joined_text, load_json, merge_text, read_item_text


def read_lcrec_json(inter: PathLike, item: PathLike | None = None, *, name: str = "lcrec",
                    item_text: Sequence[Mapping[str, Any]] = ()) -> InteractionData:
  """Reads LC-Rec's `X.inter.json` {"user": [item, ...]} and optional `X.item.json`.

  Item ids are integers (0-indexed in LC-Rec's releases); each user's list is chronological.
  `X.item.json` maps item id -> {"title", "description", "brand", "categories", ...}; every field
  becomes an item text field.
  """
  data = load_json(inter)
  if not isinstance(data, dict):
    raise DataFormatError(inter, "expected a JSON object {user: [item, ...]}, got "
                          f"{type(data).__name__}")
  if not data:
    raise DataFormatError(inter, "file has no interactions")
  user_ids, item_ids = Ids(), Ids()
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
  tables.append(joined_text(item_text))
  return assemble(name, np.asarray(users), np.asarray(items), user_ids.raw, item_ids.raw,
                  None, merge_text(*tables), source=inter)
