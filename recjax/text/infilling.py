"""GLM blank infilling with RecSysLLM's entity-aware masks and 2D positions: a text transform.

One encoded document (recjax.text.encoding) becomes one GLM example (THUDM/GLM
`blocklm_utils.py`, `ConstructBlockStrategy.make_block_data`):

    document   BOS  a b c [d e] f g [h i j] k  EOS        spans [d e] and [h i j]
    Part A     BOS  a b c [MASK] f g [MASK] k  EOS        one mask token per span
    Part B     [sop] d e  [sop] h i j                      each span fed as [sop] + span
    targets          d e [eop]  h i j [eop]                ... predicting span + [eop]

Part A attends to all of Part A; Part B to Part A and causally to Part B (`prefix_mask` = 1 on
Part A: the backbone's per-token prefix, kept per example in packed rows by `segment_ids`).
The loss is on Part B only: cross-entropy of the logits at t against `targets[t]` where
`loss_mask[t]` (not shifted: the input at t is the token *before* its target).

Positions (`GLMConfig.positions`): "2d" gives `inter_positions` = the token's position in
Part A (a Part-B token takes its mask's position) and `intra_positions` = 0 on plain Part-A
tokens, 1..n inside an entity of Part A, 1..len+1 inside each Part-B piece ([sop] is 1);
"1d" gives 0..L-1 and all zeros (a plain LM's positions). docs/llm.md says how they map onto
the backbone. `part_b_intra="entity"` instead restarts a Part-B piece's count at 1 on the first
token of each entity in it (then +1 per token, plain tokens included): the positions RecSysLLM's
dynamic positions rebuild at inference from an entity trie (`models.decoding.PartB`), where
"span" positions are what a static count reproduces.

Span kinds, one per example, drawn with `entity_prob` / `sentence_prob` / `document_prob`:
  entity    [MASK]: lengths ~ Poisson(mean_span) truncated to 1..max_span tokens, placed at a
            random token, grown or shrunk to whole entities (masking="entity"), added until
            >= mask_ratio of the maskable tokens are masked; spans never touch.
  sentence  [sMASK]: whole sentences, in random order, until >= sentence_ratio are masked.
  document  [gMASK]: one tail span of document_min_ratio..100% of the maskable tokens.
BOS and EOS are never masked. `masking="token"` ignores entities (GLM's random spans, the
ablation); `order="shuffled"` permutes the Part-B pieces (GLM) instead of keeping them in text
order (RecSysLLM).

Rules for awkward input (docs/text.md, tests/test_text_infilling.py):
  - No entities: entity-aware masking is then exactly token-span masking (same draws).
  - An entity longer than `max_span` is masked whole when a span starts on it (spans never
    cut entities; the limit bounds the sampled lengths only).
  - The ratio cannot be met (every remaining token borders a span): the example keeps the
    spans it has; a document with no maskable token is all Part A (no loss).
  - Too long: the result must fit `seq_len`, and it is len(document) + 2 per span. The
    document keeps its first T tokens (T never cuts an entity in entity mode), spans are
    sampled on them, and T is lowered by the excess and the spans drawn again until it fits.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from recjax.text import encoding
from recjax.text import tokenizer as tokenizer_lib

KINDS = ("entity", "sentence", "document")
# Per-token features this transform adds to the batch (pipeline.SEQUENCE_FEATURES has the rest).
FEATURES = ("targets", "prefix_mask", "inter_positions", "intra_positions")
# GLM's `contains_sentence_end`: a token containing one of these ends a sentence.
SENTENCE_END = frozenset(".?!;:。？！；…\n")
_PER_TOKEN = ("tokens", "loss_mask", "entity_ids", "entity_positions", "entity_kinds",
              "domain_ids")


@dataclasses.dataclass(frozen=True)
class GLMConfig:
  """Knobs of GLM blank infilling (`config.text.glm`; see `pipeline.default_config`)."""

  entity_prob: float = 0.5
  sentence_prob: float = 0.3
  document_prob: float = 0.2
  masking: str = "entity"
  order: str = "chronological"
  mask_ratio: float = 0.15
  sentence_ratio: float = 0.15
  mean_span: float = 3.0
  max_span: int = 39
  document_min_ratio: float = 0.5
  positions: str = "2d"
  part_b_intra: str = "span"
  target_as_gmask: bool = False

  def __post_init__(self):
    def bad(key, why):
      raise ValueError(f"config.text.glm.{key}={getattr(self, key)!r}: {why}")
    probs = (self.entity_prob, self.sentence_prob, self.document_prob)
    for key, p in zip(("entity_prob", "sentence_prob", "document_prob"), probs):
      if not p >= 0:
        bad(key, "must be >= 0")
    if sum(probs) <= 0:
      bad("entity_prob", "entity_prob + sentence_prob + document_prob must be > 0")
    if self.masking not in ("entity", "token"):
      bad("masking", 'choose "entity" (spans never cut an entity) or "token" (GLM\'s)')
    if self.order not in ("chronological", "shuffled"):
      bad("order", 'choose "chronological" (RecSysLLM) or "shuffled" (GLM)')
    if self.positions not in ("2d", "1d"):
      bad("positions", 'choose "2d" (inter + intra) or "1d" (0..L-1)')
    if self.part_b_intra not in ("span", "entity"):
      bad("part_b_intra", 'choose "span" (1..len+1 per piece) or "entity" (restart at 1 at '
          'each entity: what dynamic positions reproduce at inference)')
    for key in ("mask_ratio", "sentence_ratio", "document_min_ratio"):
      if not 0 < getattr(self, key) <= 1:
        bad(key, "must be in (0, 1]")
    if not self.mean_span > 0:
      bad("mean_span", "must be > 0")
    if int(self.max_span) < 1:
      bad("max_span", "must be >= 1")

  @classmethod
  def from_config(cls, block: Mapping[str, Any] | None) -> "GLMConfig":
    """From a `config.text.glm` block (ConfigDict or dict); unknown keys are an error."""
    if block is None:
      return cls()
    values = dict(block.to_dict() if hasattr(block, "to_dict") else block)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
      raise ValueError(f"config.text.glm has unknown keys {unknown}; known: {sorted(names)}")
    return cls(**values)

  @property
  def kind_probs(self) -> np.ndarray:
    p = np.array([self.entity_prob, self.sentence_prob, self.document_prob], np.float64)
    return p / p.sum()


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """Token ids the layout writes."""

  mask: int
  smask: int
  gmask: int
  sop: int
  eop: int
  bos: int
  eos: int

  @classmethod
  def from_tokenizer(cls, tokenizer) -> "SpecialIds":
    """The ids of recjax's special tokens (`tokenizer.SpecialTokens`) in `tokenizer`."""
    names = tokenizer_lib.SpecialTokens()
    added = tokenizer.special_tokens
    ids = {}
    for role in ("mask", "smask", "gmask", "sop", "eop"):
      token = getattr(names, role)
      if token not in added:
        raise ValueError(f"the tokenizer has no {token!r} ({role}): register recjax's special "
                         "tokens (tokenizer.SpecialTokens; pipeline.build_tokenizer does)")
      ids[role] = int(added[token])
    return cls(bos=int(tokenizer.bos_id), eos=int(tokenizer.eos_id), **ids)

  def mask_id(self, kind: str) -> int:
    return {"entity": self.mask, "sentence": self.smask, "document": self.gmask}[kind]


# ------------------------------------------------------------------------------------------------
# Span sampling. Spans are token [start, end) pairs of the document, in text order.


def maskable_range(tokens: np.ndarray, ids: SpecialIds) -> tuple[int, int]:
  """Token range [lo, hi) spans may cover: everything but a leading BOS and a trailing EOS."""
  n = len(tokens)
  lo = 1 if n and tokens[0] == ids.bos else 0
  hi = n - 1 if n > lo and tokens[-1] == ids.eos else n
  return lo, hi


def atoms(entity_ids: np.ndarray, lo: int, hi: int,
          entity_aware: bool = True) -> tuple[np.ndarray, np.ndarray]:
  """(starts, ends) of the units spans are made of: whole entities and single other tokens."""
  t = np.arange(lo, hi)
  if entity_aware and hi > lo:
    e = entity_ids[lo:hi]
    prev = np.concatenate([[-1], e[:-1]])
    t = t[(e == 0) | (e != prev)]
  return t, np.append(t[1:], hi).astype(t.dtype)


def span_length_probs(mean: float, max_len: int) -> np.ndarray:
  """P(length = 1..max_len): Poisson(mean) restricted to 1..max_len (GLM's block lengths)."""
  k = np.arange(1, int(max_len) + 1)
  log_pmf = k * math.log(mean) - mean - np.array([math.lgamma(i + 1) for i in k])
  p = np.exp(log_pmf - log_pmf.max())
  return p / p.sum()


@functools.lru_cache(maxsize=16)
def _length_cdf(mean: float, max_len: int) -> np.ndarray:
  cdf = np.cumsum(span_length_probs(mean, max_len))
  cdf.flags.writeable = False
  return cdf


def sample_entity_spans(entity_ids: np.ndarray, lo: int, hi: int, config: GLMConfig,
                        rng: np.random.Generator) -> list[tuple[int, int]]:
  """[MASK] spans over [lo, hi) until >= `mask_ratio` of its tokens are masked (if they fit).

  Each span: a length L ~ `span_length_probs`, a start atom drawn with probability
  proportional to its tokens (a uniformly drawn token, moved to the start of its entity), then
  following atoms while that brings the span's length nearer to L (ties grow). Spans keep one
  unmasked atom between them, so the loop ends when none is left.
  """
  starts, ends = atoms(entity_ids, lo, hi, config.masking == "entity")
  m = len(starts)
  lengths = ends - starts
  target = math.ceil(config.mask_ratio * (hi - lo))
  cdf = _length_cdf(float(config.mean_span), int(config.max_span))
  masked = np.zeros(m + 2, bool)  # one always-unmasked atom of padding on each side
  spans, total = [], 0
  while total < target:
    free = ~(masked[1:-1] | masked[:-2] | masked[2:])
    cand = np.flatnonzero(free)
    if not len(cand):
      break
    want = 1 + min(int(np.searchsorted(cdf, rng.random(), side="right")), len(cdf) - 1)
    tokens_before = np.cumsum(lengths[cand])  # a uniform free token -> its atom
    i = int(cand[np.searchsorted(tokens_before, rng.integers(tokens_before[-1]), side="right")])
    j, got = i, int(lengths[i])
    while got < want and j + 1 < m and free[j + 1]:
      grown = got + int(lengths[j + 1])
      if grown - want > want - got:
        break
      j, got = j + 1, grown
    masked[i + 1:j + 2] = True
    spans.append((int(starts[i]), int(ends[j])))
    total += got
  return sorted(spans)


def sentences(tokens: np.ndarray, entity_ids: np.ndarray, lo: int, hi: int, is_end,
              entity_aware: bool = True) -> list[tuple[int, int]]:
  """The sentences of [lo, hi): a sentence ends after a token for which `is_end(id)` holds,
  unless (entity_aware) that token and the next are in the same entity."""
  if hi - lo <= 0:
    return []
  uniq, inverse = np.unique(tokens[lo:hi - 1], return_inverse=True)
  ends = np.array([is_end(int(u)) for u in uniq], bool)[inverse]
  if entity_aware:
    e = entity_ids[lo:hi]
    ends &= ~((e[:-1] > 0) & (e[1:] == e[:-1]))
  bounds = [lo] + (lo + 1 + np.flatnonzero(ends)).tolist() + [hi]
  return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def sample_sentence_spans(tokens: np.ndarray, entity_ids: np.ndarray, lo: int, hi: int,
                          is_end, config: GLMConfig,
                          rng: np.random.Generator) -> list[tuple[int, int]]:
  """[sMASK] spans: sentences in random order until >= `sentence_ratio` of [lo, hi) is masked."""
  sents = sentences(tokens, entity_ids, lo, hi, is_end, config.masking == "entity")
  target = math.ceil(config.sentence_ratio * (hi - lo))
  spans, total = [], 0
  for i in rng.permutation(len(sents)):
    if total >= target:
      break
    spans.append(sents[int(i)])
    total += sents[int(i)][1] - sents[int(i)][0]
  return sorted(spans)


def sample_document_span(entity_ids: np.ndarray, lo: int, hi: int, config: GLMConfig,
                         rng: np.random.Generator) -> list[tuple[int, int]]:
  """The [gMASK] span: the last L tokens of [lo, hi), L uniform in
  [ceil(document_min_ratio * n), n], its start moved back to its entity's start."""
  n = hi - lo
  if n <= 0:
    return []
  length = int(rng.integers(max(1, math.ceil(config.document_min_ratio * n)), n + 1))
  start = hi - length
  if config.masking == "entity":
    start = _entity_start(entity_ids, start, lo)
  return [(start, hi)]


def _entity_start(entity_ids: np.ndarray, t: int, lo: int = 0) -> int:
  """`t`, or the first token of the entity `t` is inside of."""
  while t > lo and entity_ids[t] and entity_ids[t - 1] == entity_ids[t]:
    t -= 1
  return t


# ------------------------------------------------------------------------------------------------
# The layout.


def truncate(example: Mapping[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
  """The first `length` tokens of an encoded example and the entities starting inside them."""
  out = dict(example)
  for k in _PER_TOKEN:
    if k in example:
      out[k] = example[k][:length]
  # Entities are in text order, so those starting before the cut are the first rows.
  keep = np.asarray(example["entity_spans"])[:, 0] < length
  for k in encoding.SPAN_FEATURES:
    out[k] = example[k][keep]
  out["entity_spans"] = np.minimum(out["entity_spans"], length).astype(np.int32)
  return out


def _piece_intra(entity_ids: np.ndarray, s: int, e: int, mode: str) -> np.ndarray:
  """Intra-positions of the Part-B piece [sop] + tokens[s:e] ("span" or "entity" mode)."""
  if mode == "span":
    return np.arange(1, e - s + 2)
  eid = np.asarray(entity_ids[s:e])
  prev = np.concatenate([[entity_ids[s - 1] if s > 0 else 0], eid[:-1]])
  starts = np.concatenate([[True], (eid > 0) & (eid != prev)])  # [sop] counts as a start
  # Count up from the last start: position t minus the slot of the start at or before it.
  slot = np.arange(e - s + 1)
  last_start = np.maximum.accumulate(np.where(starts, slot, 0))
  return slot - last_start + 1


def build_blank_example(example: Mapping[str, np.ndarray], spans: Sequence[tuple[int, int]],
                        kinds: Sequence[str], ids: SpecialIds,
                        order: Sequence[int] | None = None,
                        positions: str = "2d",
                        part_b_intra: str = "span") -> dict[str, np.ndarray]:
  """The GLM example of an encoded document with the given spans.

  Args:
    example: an encoded document (transforms module docstring).
    spans: token [start, end) of each span in the document, in text order, not overlapping.
    kinds: each span's kind (KINDS), which picks its mask token.
    ids: the special token ids.
    order: the order of the Part-B pieces (a permutation of range(len(spans))); None: text
      order.
    positions: "2d" or "1d" (module docstring).
    part_b_intra: intra-positions of a Part-B piece: "span" counts 1..len+1 from [sop];
      "entity" restarts at 1 on the first token of each entity (module docstring).

  Returns:
    The encoded example of Part A + Part B with FEATURES added; `loss_mask` marks Part B,
    `targets` is 0 outside it. The entity arrays follow the tokens: entity k's per-token ids
    sit where its tokens are, in Part A or (masked) as inputs of a Part-B piece, and row k-1 of
    `entity_spans` is [start, end) of its (first contiguous run of) tokens there, or [0, 0) if
    it has none.
  """
  tokens = np.asarray(example["tokens"])
  n = len(tokens)
  if len(kinds) != len(spans):
    raise ValueError(f"{len(spans)} spans but {len(kinds)} kinds")
  last = 0
  for s, e in spans:
    if not last <= s < e <= n:
      raise ValueError(f"spans {list(spans)} are not sorted, disjoint, non-empty and inside "
                       f"the document's {n} tokens")
    last = e
  order = list(range(len(spans))) if order is None else [int(j) for j in order]
  if sorted(order) != list(range(len(spans))):
    raise ValueError(f"order {order} is not a permutation of the {len(spans)} spans")

  # Part A: source token index per slot, -1 - j at the mask of span j.
  pieces, last = [], 0
  for j, (s, e) in enumerate(spans):
    pieces += [np.arange(last, s), np.array([-1 - j])]
    last = e
  pieces.append(np.arange(last, n))
  a_src = np.concatenate(pieces).astype(np.int64)
  len_a = len(a_src)
  mask_slot = np.flatnonzero(a_src < 0)  # slot of span j's mask, j in text order
  mask_ids = np.array([ids.mask_id(k) for k in kinds], np.int32)
  a_tokens = np.where(a_src >= 0, tokens[np.maximum(a_src, 0)],
                      mask_ids[np.maximum(-1 - a_src, 0)] if len(spans) else 0)

  # Part B: [sop] + span in, span + [eop] out, every slot at its mask's inter-position.
  b_src, b_tokens, b_targets, b_inter, b_intra = [], [], [], [], []
  for j in order:
    s, e = spans[j]
    b_src += [np.array([-1]), np.arange(s, e)]
    b_tokens += [np.array([ids.sop]), tokens[s:e]]
    b_targets += [tokens[s:e], np.array([ids.eop])]
    b_inter.append(np.full(e - s + 1, mask_slot[j]))
    b_intra.append(_piece_intra(example["entity_ids"], s, e, part_b_intra))
  cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)
  src = np.concatenate([a_src, cat(b_src)])
  total = len(src)
  from_doc = src >= 0
  gather = np.maximum(src, 0)

  def carry(key):
    return np.where(from_doc, example[key][gather], 0).astype(np.int32) if n else (
        np.zeros(total, np.int32))

  out = {k: v for k, v in example.items() if k not in _PER_TOKEN + encoding.SPAN_FEATURES}
  out["tokens"] = np.concatenate([a_tokens, cat(b_tokens)]).astype(np.int32)
  out["targets"] = np.concatenate([np.zeros(len_a, np.int64), cat(b_targets)]).astype(np.int32)
  out["loss_mask"] = (np.arange(total) >= len_a).astype(np.int32)
  out["prefix_mask"] = (np.arange(total) < len_a).astype(np.int32)
  for k in ("entity_ids", "entity_positions", "entity_kinds"):
    out[k] = carry(k)
  if "domain_ids" in example:
    out["domain_ids"] = np.full(total, int(example["domain_ids"][0]) if n else 0, np.int32)
  if positions == "2d":
    a_intra = np.where(a_src >= 0, example["entity_positions"][np.maximum(a_src, 0)], 0) if n \
        else np.zeros(len_a, np.int64)
    out["inter_positions"] = np.concatenate([np.arange(len_a), cat(b_inter)]).astype(np.int32)
    out["intra_positions"] = np.concatenate([a_intra, cat(b_intra)]).astype(np.int32)
  elif positions == "1d":
    out["inter_positions"] = np.arange(total, dtype=np.int32)
    out["intra_positions"] = np.zeros(total, np.int32)
  else:
    raise ValueError(f'positions={positions!r}: choose "2d" or "1d"')

  # Runs of equal non-zero entity ids; each entity's first run is its span.
  eid = out["entity_ids"]
  entity_spans = np.zeros((len(example["entity_spans"]), 2), np.int32)
  run_start = np.flatnonzero((eid > 0) & (eid != np.concatenate([[0], eid[:-1]])))
  run_end = np.flatnonzero((eid > 0) & (eid != np.concatenate([eid[1:], [0]]))) + 1
  first_ids, first = np.unique(eid[run_start], return_index=True)
  entity_spans[first_ids - 1, 0] = run_start[first]
  entity_spans[first_ids - 1, 1] = run_end[first]
  out["entity_spans"] = entity_spans
  for k in encoding.SPAN_FEATURES[1:]:
    out[k] = np.asarray(example[k], np.int32)
  return out


def answer_prompt(example: Mapping[str, np.ndarray], ids: SpecialIds,
                  positions: str = "2d") -> dict[str, np.ndarray]:
  """The inference prompt of an encoded prompt document: Part A + [gMASK], then [sop].

  The layout `target_as_gmask` training gives the same prompt with its answer: Part A =
  BOS prompt [gMASK] EOS, Part B = [sop] answer [eop]; generation continues after [sop]. Returns
  `tokens`, `inter_positions`, `intra_positions` and `prefix_mask` (1 on Part A) of the
  prompt, and `mask_position` (the [gMASK]'s slot: every generated token's inter-position).
  """
  tokens = np.asarray(example["tokens"])
  lo, hi = maskable_range(tokens, ids)
  del lo
  insert = lambda x, v: np.concatenate([x[:hi], [v], x[hi:]])
  a_tokens = insert(tokens, ids.gmask)
  len_a = len(a_tokens)
  out = {"tokens": np.append(a_tokens, ids.sop).astype(np.int32),
         "prefix_mask": (np.arange(len_a + 1) < len_a).astype(np.int32),
         "mask_position": np.int32(hi)}
  if positions == "2d":
    intra_a = insert(np.asarray(example["entity_positions"]), 0)
    out["inter_positions"] = np.append(np.arange(len_a), hi).astype(np.int32)
    out["intra_positions"] = np.append(intra_a, 1).astype(np.int32)
  elif positions == "1d":
    out["inter_positions"] = np.arange(len_a + 1, dtype=np.int32)
    out["intra_positions"] = np.zeros(len_a + 1, np.int32)
  else:
    raise ValueError(f'positions={positions!r}: choose "2d" or "1d"')
  return out


class BlankInfilling(grain.transforms.RandomMap):
  """Encoded document -> GLM blank-infilling example of at most `seq_len` tokens."""

  features = FEATURES  # the per-token features this transform adds (pipeline reads this)

  def __init__(self, tokenizer, config: GLMConfig = GLMConfig(), seq_len: int = 512):
    if seq_len < 5:
      raise ValueError(f"config.text.seq_len={seq_len}: GLM examples need at least 5 tokens")
    self.tokenizer, self.config, self.seq_len = tokenizer, config, int(seq_len)
    self.ids = SpecialIds.from_tokenizer(tokenizer)
    self._probs = config.kind_probs
    self._is_end: dict[int, bool] = {}

  def is_sentence_end(self, token_id: int) -> bool:
    """Whether a token contains a sentence-ending character (GLM's rule), cached per id."""
    hit = self._is_end.get(token_id)
    if hit is None:
      hit = bool(SENTENCE_END.intersection(self.tokenizer.decode([token_id])))
      self._is_end[token_id] = hit
    return hit

  def _target_start(self, example, lo: int, hi: int) -> int | None:
    """First answer token of a prompt/answer document (loss_mask starts after the prompt)."""
    loss = np.asarray(example["loss_mask"][lo:hi])
    if not len(loss) or loss[0] or not loss.any():
      return None
    return lo + int(np.argmax(loss > 0))

  def sample_spans(self, example, kind: str, rng: np.random.Generator
                   ) -> tuple[list[tuple[int, int]], str]:
    """(spans, kind) of one whole (already fitting) document."""
    tokens, entity_ids = example["tokens"], example["entity_ids"]
    lo, hi = maskable_range(tokens, self.ids)
    if self.config.target_as_gmask:
      start = self._target_start(example, lo, hi)
      if start is not None:
        if self.config.masking == "entity":
          start = _entity_start(entity_ids, start, lo)
        return [(start, hi)], "document"
    if kind == "entity":
      return sample_entity_spans(entity_ids, lo, hi, self.config, rng), kind
    if kind == "sentence":
      return sample_sentence_spans(tokens, entity_ids, lo, hi, self.is_sentence_end,
                                   self.config, rng), kind
    return sample_document_span(entity_ids, lo, hi, self.config, rng), kind

  def random_map(self, example: dict[str, np.ndarray],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    kind = KINDS[int(rng.choice(len(KINDS), p=self._probs))]
    n = len(example["tokens"])
    length = min(n, self.seq_len)
    while True:
      if length < n and self.config.masking == "entity":
        length = _entity_start(example["entity_ids"], length)
      doc = truncate(example, length) if length < n else example
      spans, span_kind = self.sample_spans(doc, kind, rng)
      excess = length + 2 * len(spans) - self.seq_len
      if excess <= 0:
        break
      length = max(0, length - excess)
    order = None
    if self.config.order == "shuffled":
      order = rng.permutation(len(spans))
    return build_blank_example(doc, spans, [span_kind] * len(spans), self.ids, order,
                               self.config.positions, self.config.part_b_intra)


def glm_chain(tokenizer, config) -> list[Any]:
  """The `glm` objective's chain for a `pipeline.PipelineConfig` (its `glm` and `seq_len`)."""
  return [BlankInfilling(tokenizer, config.glm, config.seq_len)]


def attention_mask(segment_ids: np.ndarray, prefix_mask: np.ndarray) -> np.ndarray:
  """bool [..., q, k]: the backbone's prefix-LM mask of packed rows (recjax.models.llm).

  A query sees a key of its own (non-padding) segment that is not after it or is in the
  prefix.
  """
  seg = np.asarray(segment_ids)
  pre = np.asarray(prefix_mask).astype(bool)
  t = seg.shape[-1]
  causal = np.arange(t)[None, :] <= np.arange(t)[:, None]
  same = (seg[..., :, None] == seg[..., None, :]) & (seg[..., :, None] > 0)
  return same & (causal | pre[..., None, :])


def format_example(example: Mapping[str, np.ndarray], tokenizer, max_rows: int = 48) -> str:
  """A GLM example as text: Part A, each Part-B piece with its positions, and the position
  rows themselves when the example has at most `max_rows` tokens."""
  tokens = np.asarray(example["tokens"])
  prefix = np.asarray(example["prefix_mask"]).astype(bool)
  inter, intra = np.asarray(example["inter_positions"]), np.asarray(example["intra_positions"])
  targets = example["targets"]
  sop = SpecialIds.from_tokenizer(tokenizer).sop
  a_intra = intra[prefix]
  runs = int(np.sum(a_intra == 1))
  lines = [f"Part A ({int(prefix.sum())} tokens; intra 1..n inside its {runs} entities): "
           f"{tokenizer.decode(tokens[prefix])}"]
  starts = [int(t) for t in np.flatnonzero(~prefix) if tokens[t] == sop]
  for i, (a, b) in enumerate(zip(starts, starts[1:] + [len(tokens)])):
    lines.append(f"Part B {i + 1} (inter {int(inter[a])}, intra {int(intra[a])}.."
                 f"{int(intra[b - 1])}): in {tokenizer.decode(tokens[a:b])!r} -> out "
                 f"{tokenizer.decode(targets[a:b])!r}")
  if len(tokens) <= max_rows:
    lines.append("inter: " + " ".join(map(str, inter.tolist())))
    lines.append("intra: " + " ".join(map(str, intra.tolist())))
  return "\n".join(lines)
