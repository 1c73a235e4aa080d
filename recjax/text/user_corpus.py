"""Corpora rendered from interaction data by templates: users (`UserCorpus`), items (`ItemCorpus`).

Corpora are random-access (len + getitem returning a `recjax.text.document.Document`),
deterministic for a seed, and therefore usable directly as Grain `MapDataset` sources:
- `UserCorpus`: one example per (user, target position) of a split part, rendered by templates.
  Training examples are built from `Split.train` only: the history is the training prefix before
  the target and the target is in the prefix, so validation/test targets never appear.
- `ItemCorpus`: one document per catalogue item.
Mixtures of several such corpora are in recjax.text.mixture.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np

from recjax.data.canonical import InteractionData
from recjax.data.splits import Split
from recjax.text import templates as templates_lib
from recjax.text.document import (Document, Entity, Piece, render_format, render_list,
                                  render_template)
from recjax.text.item_text import ItemCatalogue, ItemTextConfig


def _user_pieces(data: InteractionData, user: int, with_features: bool) -> list[Piece]:
  pieces: list[Piece] = [Entity(f"user_{data.user_ids[user]}", "user")]
  if with_features and data.user_features:
    pieces.append(" (")
    for k, (name, column) in enumerate(sorted(data.user_features.items())):
      if k:
        pieces.append(", ")
      pieces += [f"{name}: ", Entity(str(column[user]), "user_feature", name=name)]
    pieces.append(")")
  return pieces


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def first_sentence(text: str) -> str:
  """The text up to its first sentence end (".", "!" or "?" followed by a space), or all of it."""
  return _SENTENCE_END.split(text.strip(), maxsplit=1)[0]


def default_extras(data: InteractionData) -> dict[str, np.ndarray]:
  """Per-interaction template extras the data itself provides.

  {rating} from `data.ratings`; {review} and {summary} from `data.reviews` (Amazon's review text
  and headline); {explanation} is the review's first sentence. (P5 takes explanations from
  Sentires feature-opinion extraction over the review; without that tool the first sentence is
  the closest documented stand-in.) Interactions without review text render "".
  """
  extras: dict[str, np.ndarray] = {}
  if data.ratings is not None:
    extras["rating"] = data.ratings
  for name in ("review", "summary"):
    if name in data.reviews:
      extras[name] = data.reviews[name]
  if "review" in data.reviews:
    extras["explanation"] = np.array([first_sentence(str(t)) for t in data.reviews["review"]],
                                     dtype=data.reviews["review"].dtype)
  return extras


class UserCorpus:
  """Templated user examples from one part ("train", "valid", "test") of a split.

  Train examples: for `targets="last"` one per training user with at least 2 training items
  (target = last training item); for `targets="all"` one per training position >= 1. Templates
  without a target render the history up to and including that position as a plain document.
  Valid/test examples: the evaluation history and, in `meta`, the held-out target (the prompt
  text never contains it).

  Each example uses one template: drawn per example from `templates` (`template_choice=
  "random"`, seeded), or every template in turn (`"all"`, multiplying the length).
  History: the `max_history_items` most recent items, then, with a tokenizer and `max_tokens`,
  the most recent ones that fit the token budget together with BOS/EOS; entities are never cut.
  At least `min_history_items` are kept even when they exceed the budget (the pipeline then
  truncates the document: see `show`'s truncation rate and raise seq_len).
  Candidates (direct family): the positive plus `num_candidates` negatives drawn uniformly from
  the items the user never interacted with (in any split).
  Extras ({rating}, {review}, ...): per-interaction columns from `extras`, by default those of
  `default_extras(data)` (ratings; Amazon review text, summary and explanation). A field
  always takes the value of the example's target interaction (a training-prefix interaction in
  training, the held-out one in valid/test meta), so training text never shows a rating of a
  held-out interaction.
  """

  def __init__(self, data: InteractionData, split: Split,
               templates: str | Iterable[str | templates_lib.Template] = "calrec",
               part: str = "train", targets: str = "last",
               catalogue: ItemCatalogue | None = None, tokenizer=None,
               max_tokens: int | None = None, max_history_items: int = 50,
               min_history_items: int = 1, num_candidates: int = 19,
               domain: str | None = None,
               extras: Mapping[str, np.ndarray] | None = None, user_features: bool = True,
               template_choice: str = "random", seed: int = 0, add_bos: bool = True,
               add_eos: bool = True):
    if part not in ("train", "valid", "test"):
      raise ValueError(f"part must be train, valid or test, got {part!r}")
    if targets not in ("last", "all"):
      raise ValueError(f"targets must be 'last' or 'all', got {targets!r}")
    if template_choice not in ("random", "all"):
      raise ValueError(f"template_choice must be 'random' or 'all', got {template_choice!r}")
    self.data, self.split, self.part = data, split, part
    self.catalogue = catalogue or ItemCatalogue.build(data, ItemTextConfig())
    self.tokenizer, self.max_tokens = tokenizer, max_tokens
    self.max_history_items = max_history_items
    self.min_history_items = min_history_items
    self.num_candidates = num_candidates
    self.domain = domain or data.name
    self.extras = dict(extras or {})
    for name, column in default_extras(data).items():
      self.extras.setdefault(name, column)
    self.user_features = user_features
    self.template_choice, self.seed = template_choice, seed
    self.add_bos, self.add_eos = add_bos, add_eos

    wanted = templates_lib.select(templates)
    self.skipped = {t.name: f"needs {[n for n in t.needs if n not in self.extras]}"
                    for t in wanted if any(n not in self.extras for n in t.needs)}
    if part != "train":
      self.skipped.update({t.name: "has no target to evaluate" for t in wanted
                           if not t.has_target})
    self.templates = [t for t in wanted if t.name not in self.skipped]
    if not self.templates:
      raise ValueError(f"no usable template among {[t.name for t in wanted]}: {self.skipped}")
    for name, column in self.extras.items():
      if len(column) != data.num_interactions:
        raise ValueError(f"extra {name!r} has {len(column)} values, expected one per "
                         f"interaction ({data.num_interactions})")

    if part == "train":
      lengths = split.train.lengths
      if targets == "last":
        rows = np.flatnonzero(lengths >= 2)
        positions = lengths[rows] - 1
      else:
        rows = np.repeat(np.arange(len(lengths)), np.maximum(lengths - 1, 0))
        starts = np.repeat(np.cumsum(np.maximum(lengths - 1, 0)) - np.maximum(lengths - 1, 0),
                           np.maximum(lengths - 1, 0))
        positions = np.arange(len(rows)) - starts + 1
      self._rows, self._positions = rows.astype(np.int64), positions.astype(np.int64)
    else:
      eval_set = split.valid if part == "valid" else split.test
      keep = np.flatnonzero(eval_set.histories.lengths >= 1)
      self._rows, self._positions = keep.astype(np.int64), np.zeros(len(keep), np.int64)

    if tokenizer is not None and max_tokens:
      self._item_tokens = (self.catalogue.token_lengths()
                           if self.catalogue.tokens is not None else
                           np.array([len(tokenizer.encode(t).ids) for t in self.catalogue.texts]))

  @property
  def num_base_examples(self) -> int:
    return len(self._rows)

  @property
  def rows(self) -> np.ndarray:
    """Per base example: its row in the training sequences (part "train") or in the split's
    evaluation set (valid/test; rows with an empty history are left out)."""
    return self._rows

  def __len__(self) -> int:
    n = len(self._rows)
    return n * len(self.templates) if self.template_choice == "all" else n

  def _locate(self, index: int, rng: np.random.Generator):
    if self.template_choice == "all":
      base, t = divmod(index, len(self.templates))
    else:
      base, t = index, int(rng.integers(len(self.templates))) if len(self.templates) > 1 else 0
    return base, self.templates[t]

  def example(self, index: int) -> tuple[int, np.ndarray, int, int]:
    """(user row in data, full available history oldest first, target item or 0, global
    interaction index of the target or -1) of base example `index`.

    The interaction index is -1 only for an evaluation example whose history is not a prefix of
    the user's sequence followed by the target (never the case for the built-in splits).
    """
    row = int(self._rows[index])
    if self.part == "train":
      pos = int(self._positions[index])
      user = int(self.split.train_users[row])
      seq = self.split.train[row]
      return user, seq[:pos], int(seq[pos]), int(self.data.sequences.offsets[user]) + pos
    eval_set = self.split.valid if self.part == "valid" else self.split.test
    user = int(eval_set.users[row])
    history = eval_set.histories[row]
    target = int(eval_set.targets[row])
    # Both split protocols hold out the item right after the history.
    interaction = int(self.data.sequences.offsets[user]) + len(history)
    seq = self.data.sequences[user]
    if len(history) >= len(seq) or int(seq[len(history)]) != target:
      interaction = -1
    return user, history, target, interaction

  def _item(self, item: int, role: str) -> Entity:
    return Entity(self.catalogue.texts[item], "item", role, item)

  def sample_unseen(self, user: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` distinct items `user` never interacted with (in any split), drawn uniformly."""
    seen = self.data.sequences[user]
    num_items = self.catalogue.num_items
    if num_items - len(np.unique(seen)) < count:
      raise ValueError(f"user {user} has too few unseen items for {count} negatives")
    out = np.zeros(0, np.int64)
    while len(out) < count:
      draw = rng.integers(1, num_items + 1, size=2 * count + 8)
      draw = draw[~np.isin(draw, seen)]
      out = np.concatenate([out, draw])
      _, first = np.unique(out, return_index=True)
      out = out[np.sort(first)]
    return out[:count]

  def __getitem__(self, index: int) -> Document:
    return self.render_example(index)

  def render_example(self, index: int, num_history_items: int | None = None) -> Document:
    """Example `index`; with `num_history_items`, exactly that many most recent items (capped
    by what is available) instead of the token-budgeted number."""
    if not 0 <= index < len(self):
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, int(index)])
    base, template = self._locate(int(index), rng)
    user, history, target, interaction = self.example(base)
    if not template.has_target:  # plain document over everything up to the target position
      history, target = np.append(history, target), 0
    history = history[-self.max_history_items:] if self.max_history_items else history[:0]

    fields: dict[str, Any] = {
        "user": _user_pieces(self.data, user, self.user_features),
        "domain": self.domain,
    }
    if target:
      fields["target"] = self._item(target, "target")
      fields["item"] = fields["target"]
    fields_used = template.fields
    if "candidates" in fields_used:
      negatives = [self._item(i, "candidate")
                   for i in self.sample_unseen(user, self.num_candidates, rng)]
      cands = negatives + [fields["target"]]
      order = rng.permutation(len(cands))
      fields["candidates"] = render_list([cands[i] for i in order], template.list_item,
                                         template.list_sep)
    if "answer" in fields_used:
      if rng.random() < 0.5:
        fields["answer"] = "yes"
      else:
        fields["answer"] = "no"
        fields["item"] = self._item(int(self.sample_unseen(user, 1, rng)[0]), "candidate")
    if template.needs and interaction < 0:
      raise ValueError(f"template {template.name!r} needs {list(template.needs)}, but example "
                       f"{index}'s target is not the interaction after its history")
    for name in template.needs:
      value = self.extras[name][interaction]
      fields[name] = f"{float(value):g}" if name == "rating" else str(value)
    target_text = render_format(template.target, fields)[0] if template.has_target else ""

    def render(history_items):
      fields["history"] = render_list([self._item(int(i), "history") for i in history_items],
                                      template.list_item, template.list_sep)
      return render_template(template, fields, with_target=self.part == "train")

    if num_history_items is not None:
      doc = render(history[len(history) - min(num_history_items, len(history)):])
      enc = None if self.tokenizer is None else self.tokenizer.encode(
          doc.text, add_bos=self.add_bos, add_eos=self.add_eos)
    else:
      doc, enc = self._fit(render, history)
    if enc is not None:
      doc.encoding, doc.encoding_flags = enc, (self.add_bos, self.add_eos)
    doc.meta = {"user": user, "domain": self.domain, "template": template.name,
                "family": template.family, "held_out": template.held_out,
                "target_item": target, "target_text": target_text, "index": int(index),
                "history_items": sum(s.role == "history" for s in doc.spans),
                "available_history_items": len(history) if "history" in fields_used else 0}
    return doc

  def _fit(self, render, history: np.ndarray):
    """Renders with the most recent items of `history` that fit the token budget."""
    if self.tokenizer is None:
      return render(history), None
    encode = lambda d: self.tokenizer.encode(d.text, add_bos=self.add_bos, add_eos=self.add_eos)
    doc = render(history)
    enc = encode(doc)
    if not self.max_tokens or len(enc.ids) <= self.max_tokens or not len(history):
      return doc, enc
    # Estimate how many of the most recent items fit, then correct on real token counts: up
    # while one more item still fits, or down until it fits (but not below the floor).
    n = len(history)
    costs = np.cumsum(self._item_tokens[history[::-1]] + 1)
    base = len(enc.ids) - int(costs[-1])  # tokens outside the history, estimated
    floor = min(self.min_history_items, n)
    if floor == n:
      return doc, enc
    keep = int(np.searchsorted(costs, self.max_tokens - base, side="right"))
    keep = min(max(keep, floor), n - 1)

    def attempt(k):
      d = render(history[n - k:])
      e = encode(d)
      return d, e, len(e.ids) <= self.max_tokens

    doc, enc, fits = attempt(keep)
    if fits:
      while keep + 1 < n:
        more = attempt(keep + 1)
        if not more[2]:
          break
        keep, doc, enc = keep + 1, more[0], more[1]
      return doc, enc
    while keep > floor:
      keep -= 1
      doc, enc, fits = attempt(keep)
      if fits:
        break
    return doc, enc


class ItemCorpus:
  """One document per catalogue item (ids 1..N), rendered by the `item` family templates."""

  def __init__(self, data: InteractionData, catalogue: ItemCatalogue | None = None,
               templates: str | Iterable[str | templates_lib.Template] = "item_text",
               domain: str | None = None, seed: int = 0):
    self.data = data
    self.catalogue = catalogue or ItemCatalogue.build(data, ItemTextConfig.full())
    self.templates = templates_lib.select(templates)
    bad = [t.name for t in self.templates if t.fields - {"item", "domain"}]
    if bad:
      raise ValueError(f"item corpus templates may use only {{item}} and {{domain}}: {bad}")
    self.domain = domain or data.name
    self.seed = seed

  def __len__(self) -> int:
    return self.catalogue.num_items

  def __getitem__(self, index: int) -> Document:
    if not 0 <= index < len(self):
      raise IndexError(index)
    item = int(index) + 1
    rng = np.random.default_rng([self.seed, item])
    template = self.templates[int(rng.integers(len(self.templates)))]
    fields = {"item": Entity(self.catalogue.texts[item], "item", "target", item),
              "domain": self.domain, "target": ""}
    doc = render_template(template, fields)
    doc.meta = {"item": item, "domain": self.domain, "template": template.name,
                "family": template.family, "held_out": template.held_out, "index": int(index)}
    return doc
