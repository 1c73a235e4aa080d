"""Item text: cleaning, deterministic truncation, and the catalogue index (id <-> text <-> tokens).

An item's text is rendered once from `InteractionData.item_text` by an `ItemTextConfig` (which
fields, in which order, how long) and then reused everywhere: in user histories, as generation
targets, for BM25 retrieval and for the item tower of CALRec. Items with no text in any chosen
field fall back to `config.fallback` ("item <raw id>" by default).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Mapping, Sequence

import numpy as np

from recjax.data.canonical import InteractionData, Sequences
from recjax.data.readers import clean_text  # the one text-cleaning rule; re-exported

# ------------------------------------------------------------------------------------------------
# Cleaning (`clean_text`, from recjax.data.readers: docs/data_formats.md lists its rules) and
# truncation.


def truncate_words(text: str, max_chars: int) -> str:
  """The longest prefix of whole words within `max_chars` (a hard cut if the first word is longer).

  Trailing punctuation and spaces at the cut are dropped. No ellipsis is added, so a truncated
  text stays a prefix of the original.
  """
  if max_chars <= 0 or len(text) <= max_chars:
    return text
  cut = text[:max_chars + 1]
  space = cut.rfind(" ")
  out = cut[:space] if space > 0 else text[:max_chars]
  return out.rstrip(" ,;:-/|&+")


# ------------------------------------------------------------------------------------------------
# Rendering an item.

# Default per-field character limits; fields not listed get `ItemTextConfig.default_max_chars`.
FIELD_MAX_CHARS = {"title": 120, "brand": 40, "categories": 80, "description": 300, "price": 16}
# Labels written before field values when `ItemTextConfig.labels` (the title is never labelled).
FIELD_LABELS = {"brand": "Brand", "categories": "Category", "description": "Description",
                "price": "Price", "genres": "Genres", "year": "Year"}


@dataclasses.dataclass(frozen=True)
class ItemTextConfig:
  """How an item is written: which fields, in which form, how long.

  `template` is a `str.format` string over the field names, e.g. "{title} ({brand})"; the parts
  of it that mention a field the item lacks are dropped (see `_render_parts`). With
  `template=""`, the present fields are joined as "<Label>: <value>" with `separator`.
  """

  fields: tuple[str, ...] = ("title", "brand", "categories")
  template: str = ""
  separator: str = "; "
  labels: bool = True  # write "Brand: X" (True) or just "X" (False) when template == ""
  max_chars: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(FIELD_MAX_CHARS))
  default_max_chars: int = 100
  total_max_chars: int = 256
  fallback: str = "item {raw_id}"
  # Fields whose value is a list separated by ", " (Amazon category paths): keep at most this
  # many trailing (most specific) elements. 0 keeps all.
  max_categories: int = 3

  @classmethod
  def short(cls) -> "ItemTextConfig":
    """Title only: compact mentions inside long user histories."""
    return cls(fields=("title",), labels=False, total_max_chars=120)

  @classmethod
  def full(cls) -> "ItemTextConfig":
    """Every common field including the description: item-text corpora and item towers."""
    return cls(fields=("title", "brand", "categories", "price", "description"),
               total_max_chars=512)

  def fingerprint(self) -> str:
    """A stable hash of the configuration (for caches)."""
    blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


_FORMAT_FIELD_RE = re.compile(r"\{(\w+)\}")


def _format_value(name: str, value: str, config: ItemTextConfig) -> str:
  value = clean_text(value)
  if not value:
    return ""
  if name == "categories" and config.max_categories:
    parts = [p.strip() for p in re.split(r"\s*(?:,|>|\|)\s*", value) if p.strip()]
    value = ", ".join(parts[-config.max_categories:])
  if name == "price":
    try:
      value = f"${float(value.lstrip('$')):.2f}"
    except ValueError:
      pass
  return truncate_words(value, config.max_chars.get(name, config.default_max_chars))


def _render_parts(template: str, values: Mapping[str, str]) -> str:
  """Formats `template`, dropping bracketed/separated parts whose field is empty.

  Parts are the pieces between fields; a field that is empty removes itself together with the
  literal text directly before it (e.g. " by {brand}" disappears when brand is missing).
  """
  out, last = [], 0
  pending_literal = ""
  for m in _FORMAT_FIELD_RE.finditer(template):
    pending_literal += template[last:m.start()]
    last = m.end()
    value = values.get(m.group(1), "")
    if value:
      out.append(pending_literal if out else pending_literal.lstrip(" ,;:-"))
      out.append(value)
    pending_literal = ""
  tail = template[last:]
  if out:
    out.append(tail)
  return "".join(out).strip()


def render_item(fields: Mapping[str, str], raw_id: str, config: ItemTextConfig) -> str:
  """The text of one item from its raw field values."""
  values = {name: _format_value(name, fields.get(name, ""), config) for name in config.fields}
  if config.template:
    text = _render_parts(config.template, values)
  else:
    parts = []
    for name in config.fields:
      if not values[name]:
        continue
      if config.labels and name != "title":
        label = FIELD_LABELS.get(name, name.replace("_", " ").capitalize())
        parts.append(f"{label}: {values[name]}")
      else:
        parts.append(values[name])
    text = config.separator.join(parts)
  text = truncate_words(text, config.total_max_chars)
  return text or config.fallback.format(raw_id=raw_id)


# ------------------------------------------------------------------------------------------------
# The catalogue index.


@dataclasses.dataclass
class ItemCatalogue:
  """Rendered text of every item, its token ids, and text -> id lookup, for one dataset.

  `texts[i]` is the text of internal item id i (`texts[0] == ""` for padding). `tokens` (a
  `Sequences`, row i = token ids of item i without BOS/EOS) exists when built with a tokenizer.
  """

  name: str
  config: ItemTextConfig
  texts: list[str]
  has_text: np.ndarray  # bool [num_items + 1]: False where the fallback was used
  tokens: Sequences | None = None
  tokenizer_name: str = ""

  def __post_init__(self):
    self._ids_by_text: dict[str, list[int]] | None = None

  @property
  def num_items(self) -> int:
    return len(self.texts) - 1

  def text(self, item: int) -> str:
    return self.texts[item]

  def ids_of(self, text: str) -> list[int]:
    """All item ids whose text equals `text` (several items may share a title)."""
    if self._ids_by_text is None:
      self._ids_by_text = {}
      for i, t in enumerate(self.texts[1:], start=1):
        self._ids_by_text.setdefault(t, []).append(i)
    return list(self._ids_by_text.get(text, ()))

  def token_lengths(self) -> np.ndarray:
    """Tokens per item, int64 [num_items + 1] (needs a tokenizer at build time)."""
    if self.tokens is None:
      raise ValueError("catalogue was built without a tokenizer")
    return self.tokens.lengths

  @classmethod
  def build(cls, data: InteractionData, config: ItemTextConfig | None = None,
            tokenizer=None, cache_dir: str | os.PathLike | None = None) -> "ItemCatalogue":
    """Renders (and optionally tokenizes) every item; reuses `cache_dir` when it has this build."""
    config = config or ItemTextConfig()
    cache_path = None
    tok_name = _tokenizer_fingerprint(tokenizer) if tokenizer is not None else ""
    if cache_dir is not None:
      key = hashlib.sha1("|".join([
          data.name, str(data.num_items), config.fingerprint(), tok_name,
          hashlib.sha1("\x00".join(map(str, data.item_ids)).encode()).hexdigest(),
          *(f"{k}:{hashlib.sha1(chr(0).join(map(str, v)).encode()).hexdigest()}"
            for k, v in sorted(data.item_text.items()))]).encode()).hexdigest()[:20]
      cache_path = pathlib.Path(cache_dir) / f"catalogue_{data.name}_{key}.npz"
      if cache_path.exists():
        return cls._load(cache_path, data.name, config, tok_name)

    texts, has_text = [""], [False]
    columns = {f: data.item_text[f] for f in config.fields if f in data.item_text}
    for item in range(1, data.num_items + 1):
      fields = {f: str(col[item]) for f, col in columns.items()}
      text = render_item(fields, str(data.item_ids[item]), config)
      texts.append(text)
      has_text.append(any(clean_text(v) for v in fields.values()))
    tokens = None
    if tokenizer is not None:
      tokens = Sequences.from_lists([tokenizer.encode(t).ids for t in texts])
    catalogue = cls(data.name, config, texts, np.asarray(has_text), tokens, tok_name)
    if cache_path is not None:
      catalogue._save(cache_path)
    return catalogue

  def _save(self, path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"texts": np.asarray(self.texts, dtype=object).astype(str),
              "has_text": self.has_text}
    if self.tokens is not None:
      arrays["token_values"] = self.tokens.values
      arrays["token_offsets"] = self.tokens.offsets
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)

  @classmethod
  def _load(cls, path, name, config, tok_name):
    with np.load(path) as z:
      texts = [str(t) for t in z["texts"]]
      texts[0] = ""
      tokens = (Sequences(z["token_values"], z["token_offsets"])
                if "token_values" in z else None)
      return cls(name, config, texts, z["has_text"], tokens, tok_name)


def _tokenizer_fingerprint(tokenizer) -> str:
  probe = "Hello, World! 123 [MASK] café <RECTOKEN> REC7"
  enc = tokenizer.encode(probe)
  blob = f"{type(tokenizer).__name__}|{tokenizer.vocab_size}|{enc.ids.tolist()}"
  return hashlib.sha1(blob.encode()).hexdigest()[:16]


def item_fields_present(data: InteractionData) -> Sequence[str]:
  """The text fields of `data` that at least one item has."""
  return [f for f, col in data.item_text.items() if any(str(v) for v in col[1:])]
