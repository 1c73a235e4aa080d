"""Layer 1 grounding corpora: co-occurrence association rules and item-text alignment sentences.

Rules are mined from the TRAINING sequences of a split only (`mine_rules(split.train, ...)`), so
no validation or test target reaches them. Each training sequence is one transaction:

- `count(a)`: sequences containing item a;
- `count(a, b)`: sequences in which b comes at most `window` positions after a (with
  `ordered=False`, before or after);
- support = count(a, b) / sequences, confidence = count(a, b) / count(a),
  lift = confidence / (count(b) / sequences).

A pair of an item with itself (a repeat purchase) is not a rule. `heldout_pairs` gives the
evaluation side: (history item, target) pairs of `split.valid` / `split.test`, grouped by whether
their items were seen in training.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import numpy as np

from recjax.data.canonical import InteractionData, Sequences
from recjax.text.item_text import ItemTextConfig, render_item

# {a}, {b}: the items as rendered by `item_token`; the rest are the rule's statistics.
RULE_TEMPLATE = ("Users who interact with {a} then interact with {b} with probability "
                 "{confidence:.2f} (support {support:.2g}, lift {lift:.2f}).")
# The category of an item is the first of these fields the dataset has (Amazon, synthetic,
# MovieLens).
CATEGORY_FIELDS = ("categories", "category", "genres")


@dataclasses.dataclass(frozen=True)
class Rules:
  """Association rules a -> b, best first: confidence, then lift descending; ties by (a, b)."""

  antecedent: np.ndarray  # int32 [r]
  consequent: np.ndarray  # int32 [r]
  count: np.ndarray  # int64 [r]: sequences with the pair
  support: np.ndarray  # float64 [r]
  confidence: np.ndarray  # float64 [r]
  lift: np.ndarray  # float64 [r]
  num_sequences: int

  def __len__(self) -> int:
    return len(self.antecedent)

  def pairs(self) -> set[tuple[int, int]]:
    return set(zip(self.antecedent.tolist(), self.consequent.tolist()))


def pair_counts(train: Sequences, num_items: int, window: int = 3, ordered: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(antecedent, consequent, count(a, b), count(item) [num_items + 1]) over `train`."""
  if window < 1:
    raise ValueError(f"co-occurrence window must be >= 1, got {window}")
  values = train.values.astype(np.int64)
  row = np.repeat(np.arange(len(train), dtype=np.int64), train.lengths)
  if len(values) and (values.min() < 1 or values.max() > num_items):
    raise ValueError(f"training items must lie in 1..{num_items}, got "
                     f"{values.min()}..{values.max()}")
  base = num_items + 1
  if (len(train) + 1) * base * base >= 2 ** 63:
    raise ValueError(f"{len(train):,} sequences x {num_items:,}^2 items overflow the int64 pair "
                     "keys; mine rules on shards of the training sequences")
  keys = []
  for d in range(1, window + 1):
    same = (row[d:] == row[:-d]) & (values[d:] != values[:-d])
    a, b, r = values[:-d][same], values[d:][same], row[d:][same]
    keys.append((r * base + a) * base + b)
    if not ordered:
      keys.append((r * base + b) * base + a)
  keys = np.unique(np.concatenate(keys))  # each pair once per sequence
  pair = keys % (base * base)
  pair, count = np.unique(pair, return_counts=True)
  item_rows = np.unique(row * base + values)  # each item once per sequence
  item_count = np.bincount(item_rows % base, minlength=base).astype(np.int64)
  return ((pair // base).astype(np.int32), (pair % base).astype(np.int32),
          count.astype(np.int64), item_count)


def mine_rules(train: Sequences, num_items: int, window: int = 3, ordered: bool = True,
               min_count: int = 2, min_support: float = 0.0, min_confidence: float = 0.0,
               min_lift: float = 1.0, max_rules: int | None = None) -> Rules:
  """Association rules a -> b from training sequences, filtered by the thresholds.

  Args:
    train: the training part of a split (`split.train`), never evaluation histories.
    num_items: catalogue size (items are 1..num_items).
    window: b counts when it is at most this many positions after a (3 default).
    ordered: count b only after a (True) or on either side (False).
    min_count: sequences a pair must occur in (2: a single user is anecdote, not a rule).
    min_support, min_confidence, min_lift: thresholds on the statistics (lift 1.0 keeps pairs
      seen together at least as often as chance).
    max_rules: keep at most this many, best first (None: all).
  """
  a, b, count, item_count = pair_counts(train, num_items, window, ordered)
  n = max(len(train), 1)
  support = count / n
  confidence = count / item_count[a]
  lift = confidence / (item_count[b] / n)
  keep = ((count >= min_count) & (support >= min_support) & (confidence >= min_confidence)
          & (lift >= min_lift))
  a, b, count, support, confidence, lift = (v[keep] for v in (a, b, count, support,
                                                              confidence, lift))
  order = np.lexsort((b, a, -lift, -confidence))
  if max_rules is not None:
    order = order[:max_rules]
  return Rules(a[order], b[order], count[order], support[order], confidence[order], lift[order],
               num_sequences=len(train))


def rule_sentences(rules: Rules, item_token: Callable[[int], str],
                   template: str = RULE_TEMPLATE) -> list[str]:
  """One sentence per rule; `template` may use {a}, {b}, {count}, {support}, {confidence},
  {lift}."""
  return [template.format(a=item_token(int(a)), b=item_token(int(b)), count=int(c), support=s,
                          confidence=conf, lift=l)
          for a, b, c, s, conf, l in zip(rules.antecedent, rules.consequent, rules.count,
                                         rules.support, rules.confidence, rules.lift)]


def alignment_sentence(item_id: str, title: str = "", brand: str = "", category: str = ""
                       ) -> str:
  """"This item <ID> is described as <title>, by <brand>, in <category>." (absent parts
  dropped)."""
  parts = [f"This item {item_id}"]
  if title:
    parts.append(f" is described as {title}")
  if brand:
    parts.append(f", by {brand}")
  if category:
    parts.append(f", in {category}")
  return "".join(parts) + "."


def alignment_sentences(data: InteractionData, item_token: Callable[[int], str],
                        items: Iterable[int] | None = None,
                        config: ItemTextConfig = ItemTextConfig()) -> list[tuple[int, str]]:
  """(item, sentence) for every item of `items` (default all) with a title, brand or category.

  The category is the first of CATEGORY_FIELDS the dataset has.

  Field values are cleaned and truncated like everywhere else (`config.max_chars`, category
  paths to their last `config.max_categories` parts). Items with none of the three are left out:
  a sentence without text grounds nothing.
  """
  items = range(1, data.num_items + 1) if items is None else items
  category = next((f for f in CATEGORY_FIELDS if f in data.item_text), "categories")
  fields = {"title": "title", "brand": "brand", "category": category}
  out = []
  for item in items:
    values = {}
    for part, field in fields.items():
      column = data.item_text.get(field)
      raw = str(column[item]) if column is not None else ""
      one = dataclasses.replace(config, fields=(field,), template="{" + field + "}",
                                fallback="", total_max_chars=0)
      values[part] = render_item({field: raw}, "", one)
    if any(values.values()):
      out.append((int(item), alignment_sentence(item_token(int(item)), **values)))
  return out


PAIR_SPLITS = ("both_seen", "one_unseen", "both_unseen")


def heldout_pairs(train: Sequences, eval_set, window: int = 1
                  ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Held-out co-occurrence pairs (history item, target) of an evaluation set, by novelty.

  For each user of `eval_set` (`split.valid` or `split.test`), the pairs (h[-d], target) for
  d = 1..window of their history h, grouped by how many of the two items occur anywhere in `train`:
  {"both_seen": (a, b), "one_unseen": (a, b), "both_unseen": (a, b)} (int32 arrays). These are
  the evaluation pairs of the co-occurrence modality; none of them is in `mine_rules(train)`
  unless the same pair also occurs in training.
  """
  if window < 1:
    raise ValueError(f"co-occurrence window must be >= 1, got {window}")
  lengths = eval_set.histories.lengths
  ends = eval_set.histories.offsets[1:]
  a_parts, b_parts = [], []
  for d in range(1, window + 1):
    has = lengths >= d
    a_parts.append(eval_set.histories.values[ends[has] - d])
    b_parts.append(np.asarray(eval_set.targets)[has])
  a, b = np.concatenate(a_parts).astype(np.int32), np.concatenate(b_parts).astype(np.int32)
  keep = a != b
  a, b = a[keep], b[keep]
  seen = np.zeros(max(int(train.values.max(initial=0)), int(a.max(initial=0)),
                      int(b.max(initial=0))) + 1, bool)
  seen[train.values] = True
  unseen = (~seen[a]).astype(int) + (~seen[b]).astype(int)
  return {name: (a[unseen == i], b[unseen == i]) for i, name in enumerate(PAIR_SPLITS)}
