"""CALRec's training examples: (history, next item) pairs rendered twice, as padded rows.

A pair is a training position of a user's sequence: the items before it are the history, the
item at it the next item. Pairs come from `Split.train` only (every prefix of each training
sequence, or the last `window` of them), so no validation or test target is ever a pair's
history or next item. A one-item training sequence has no pair (nothing precedes its only
item); a user with none contributes nothing.

Each pair becomes two rows with one set of weights (recjax.tasks.calrec):

  joint row   BOS  <CALRec template over the history>  <next item's text>  EOS   pad ...
              user_mask ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^  target_mask ^^^^^^
              loss_mask (NIG: next-token loss)           ^^^^^^^^^^^^^^^^^^^^^^
  item row    BOS  <next item's text>  pad ...
              item_mask ^^^^^^^^^^^^^^

Rows are padded, never packed (one example per row, `segment_ids` 1 on real tokens), so the
pooling masks are plain per-token masks. `user_mask` is, by `user_tokens`, every prompt token
after BOS ("prompt": the template words and the history) or only the history items' tokens
("history_items"), or the last prompt token alone ("last": the causal state that predicts the
next item; mean pooling over many causal states collapses every user onto one direction, issue
10). `target_mask` is the next item's tokens (its entity in the encoded
document); `loss_mask` the same tokens plus EOS (the model learns to stop). Each row's
`pair_id` tells duplicates apart: domain * (largest catalogue + 1) + item id, so an item that
is the next item of two pairs of a batch is never its own negative.

The history is the most recent `text.max_history_items` items that fit `text.seq_len` tokens
together with the template and the next item (recjax.text.user_corpus); the item row holds at
most `item_len` tokens after BOS (longer item texts are cut there, in both rows' masks alike),
padded to a multiple of 8 slots (`item_row_width`: cuDNN's fused attention trains with a mask
only on even row lengths, and round widths tile better on every accelerator).
A pair whose joint row lost its next item to truncation (`text.min_history_items` kept more
history than `seq_len` holds) gets `valid = 0`: it adds nothing to any loss.
"""
from __future__ import annotations

from typing import Any, Sequence

import grain
import numpy as np

from recjax.text import document
from recjax.text import encoding
from recjax.text import templates as templates_lib
from recjax.text.user_corpus import UserCorpus

USER_TOKENS = ("prompt", "history_items", "last")
JOINT_FEATURES = ("tokens", "segment_ids", "positions", "loss_mask", "user_mask", "target_mask")
ITEM_FEATURES = ("item_tokens", "item_segment_ids", "item_positions", "item_mask")
FEATURES = JOINT_FEATURES + ITEM_FEATURES + ("pair_id", "valid")


def check_template(name: str) -> templates_lib.Template:
  """The one template CALRec renders; its target must be exactly the next item's text."""
  selected = templates_lib.select(name)
  if len(selected) != 1 or selected[0].target != "{target}" or "history" not in (
      selected[0].fields):
    raise ValueError(f"config.calrec.template={name!r}: CALRec needs one template with a "
                     "{history} prompt and the target '{target}' alone (e.g. 'calrec')")
  return selected[0]


def pair_positions(lengths: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
  """(training row, position) of every pair: positions 1..len-1 of each training sequence,
  only the last `window` of them when `window > 0`. Rows with fewer than 2 items have none."""
  lengths = np.asarray(lengths, np.int64)
  count = np.maximum(lengths - 1, 0)
  if window > 0:
    count = np.minimum(count, window)
  rows = np.repeat(np.arange(len(lengths)), count)
  first = np.repeat(np.cumsum(count) - count, count)
  # Last `count` positions of each row: len - count .. len - 1.
  positions = np.arange(len(rows)) - first + np.repeat(lengths - count, count)
  return rows.astype(np.int64), positions.astype(np.int64)


class PairCorpus:
  """The pairs of one domain's training sequences as Documents (`UserCorpus` renders them).

  `corpus` must be a training `UserCorpus` with `targets="all"`: base example k of it is
  position p of training row r in (row, position) order, which `pair_positions` indexes.
  """

  def __init__(self, corpus: UserCorpus, window: int = 0):
    if corpus.part != "train":
      raise ValueError("CALRec pairs come from the training part of the split only")
    if len(corpus.templates) != 1:
      raise ValueError("a PairCorpus renders exactly one template")
    self.corpus, self.window = corpus, int(window)
    lengths = corpus.split.train.lengths
    rows, positions = pair_positions(lengths, self.window)
    all_count = np.maximum(np.asarray(lengths, np.int64) - 1, 0)
    base = np.cumsum(all_count) - all_count  # first base example of each row
    self.indices = base[rows] + positions - 1
    self.rows, self.positions = rows, positions

  @property
  def catalogue(self):
    return self.corpus.catalogue

  @property
  def data(self):
    return self.corpus.data

  @property
  def split(self):
    return self.corpus.split

  @property
  def domain(self) -> str:
    return self.corpus.domain

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> document.Document:
    if not 0 <= index < len(self):
      raise IndexError(index)
    doc = self.corpus[int(self.indices[index])]
    doc.meta = dict(doc.meta, pair=int(index))
    return doc

  def describe(self) -> str:
    which = f"the last {self.window} per user" if self.window else "every prefix"
    return (f"{self.corpus.data.summary()}\nCALRec pairs ({which} of the training sequences): "
            f"{len(self):,}")


def item_row(tokenizer, text: str, item_len: int) -> np.ndarray:
  """BOS + the first `item_len` tokens of an item's text (the item-alone sequence)."""
  ids = tokenizer.encode(text, add_bos=False, add_eos=False).ids[:item_len]
  return np.concatenate([[int(tokenizer.bos_id)], ids]).astype(np.int32)


def item_row_width(item_len: int) -> int:
  """Slots of the padded item-alone row: BOS + `item_len` tokens, rounded up to a multiple of 8."""
  return -(-(int(item_len) + 1) // 8) * 8


def pad(row: np.ndarray, length: int, value: int = 0) -> np.ndarray:
  out = np.full(length, value, np.int32)
  out[:len(row)] = row[:length]
  return out


def joint_masks(example: dict[str, np.ndarray], user_tokens: str,
                item_len: int) -> tuple[np.ndarray, np.ndarray]:
  """(user_mask, target_mask) of an encoded joint document (bool [n] each).

  target_mask: the tokens of the target item entity, at most `item_len` of them; user_mask:
  by `user_tokens` (module docstring), never BOS, EOS or a target token.
  """
  n = len(example["tokens"])
  roles = example["entity_span_roles"]
  spans = example["entity_spans"]
  target_mask = np.zeros(n, bool)
  hits = np.flatnonzero(roles == document.ENTITY_ROLES["target"])
  if len(hits):
    start, end = spans[hits[-1]]
    target_mask[start:min(end, start + item_len)] = True
  if user_tokens == "prompt":
    first_answer = np.flatnonzero(example["loss_mask"] > 0)
    stop = int(first_answer[0]) if len(first_answer) else n
    user_mask = np.zeros(n, bool)
    user_mask[1:stop] = True  # after BOS, before the answer
    user_mask &= ~target_mask
  elif user_tokens == "last":  # the last prompt token: the state that predicts the next item
    first_answer = np.flatnonzero(example["loss_mask"] > 0)
    stop = int(first_answer[0]) if len(first_answer) else n
    user_mask = np.zeros(n, bool)
    user_mask[max(stop - 1, 1):stop] = True
  elif user_tokens == "history_items":
    history = np.flatnonzero(roles == document.ENTITY_ROLES["history"]) + 1
    user_mask = np.isin(example["entity_ids"], history) & (example["entity_ids"] > 0)
  else:
    raise ValueError(f"config.calrec.user_tokens={user_tokens!r}: choose from {USER_TOKENS}")
  return user_mask, target_mask


class EncodePair(grain.transforms.Map):
  """Document of a pair -> the padded joint and item rows (module docstring) as int32 arrays."""

  def __init__(self, tokenizer, seq_len: int, item_len: int, user_tokens: str = "prompt",
               id_stride: int = 0):
    if user_tokens not in USER_TOKENS:
      raise ValueError(f"config.calrec.user_tokens={user_tokens!r}: choose from {USER_TOKENS}")
    self.tokenizer, self.seq_len, self.item_len = tokenizer, int(seq_len), int(item_len)
    self.user_tokens, self.id_stride = user_tokens, int(id_stride)

  def map(self, doc: document.Document) -> dict[str, np.ndarray]:
    ex = encoding.encode_document(doc, self.tokenizer, add_bos=True, add_eos=True)
    n = min(len(ex["tokens"]), self.seq_len)
    user_mask, target_mask = joint_masks(ex, self.user_tokens, self.item_len)
    item = item_row(self.tokenizer, doc.meta["target_text"], self.item_len)
    m, width = len(item), item_row_width(self.item_len)
    pad_id = int(self.tokenizer.pad_id)
    out = {
        "tokens": pad(ex["tokens"][:n], self.seq_len, pad_id),
        "segment_ids": pad(np.ones(n, np.int32), self.seq_len),
        "positions": pad(np.arange(n, dtype=np.int32), self.seq_len),
        "loss_mask": pad(ex["loss_mask"][:n], self.seq_len),
        "user_mask": pad(user_mask[:n].astype(np.int32), self.seq_len),
        "target_mask": pad(target_mask[:n].astype(np.int32), self.seq_len),
        "item_tokens": pad(item, width, pad_id),
        "item_segment_ids": pad(np.ones(m, np.int32), width),
        "item_positions": pad(np.arange(m, dtype=np.int32), width),
        "item_mask": pad((np.arange(m) > 0).astype(np.int32), width),
    }
    domain = int(doc.meta.get("domain_id", 0))
    out["pair_id"] = np.int32(domain * self.id_stride + int(doc.meta["target_item"]))
    # A joint row cut before its next item (a history floor beyond seq_len) pools nothing.
    out["valid"] = np.int32(bool(target_mask[:n].any() and user_mask[:n].any()))
    return out


def make_pair_dataset(corpus: Sequence[Any], tokenizer, *, seq_len: int, item_len: int,
                      batch_size: int, user_tokens: str = "prompt", id_stride: int = 0,
                      seed: int = 0, shard_index: int = 0,
                      shard_count: int = 1) -> grain.IterDataset:
  """Shuffled (every epoch anew), repeated batches of this host's pairs, forever.

  Deterministic for a seed and checkpointable (the trainer saves the iterator's position).
  """
  from recjax.text import pipeline  # pylint: disable=g-import-not-at-top
  cfg = pipeline.PipelineConfig(seq_len=seq_len, batch_size=batch_size, shuffle=True,
                                seed=seed, num_epochs=None, even_shards=True)
  ds = pipeline.shard_documents(corpus, cfg, shard_index, shard_count)
  ds = ds.map(EncodePair(tokenizer, seq_len, item_len, user_tokens, id_stride))
  return ds.to_iter_dataset().batch(batch_size, drop_remainder=True)
