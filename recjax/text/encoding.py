"""Documents to token-level arrays: tokens, loss mask, and entity spans as tokens.

`encode_document` maps each entity's characters to the tokens that cover them through the
tokenizer's offsets, so objectives can mask whole entities (GLM), number positions inside them
(RecSysLLM's intra-entity positions) and pool over history or target tokens (CALRec). The
result has two views of the same entities: per token (`entity_ids`, `entity_positions`,
`entity_kinds`) and per entity (`entity_spans` with `entity_span_kinds`, `entity_span_items`,
`entity_span_roles`); entity k (1-based, text order) is row k-1 of the per-entity arrays.
"""
from __future__ import annotations

import numpy as np

from recjax.text.document import ENTITY_KINDS, ENTITY_ROLES, Document

# Per-entity arrays of an encoded document, in the order `encode_document` returns them.
SPAN_FEATURES = ("entity_spans", "entity_span_kinds", "entity_span_items", "entity_span_roles")


def encode_document(doc: Document, tokenizer, add_bos: bool = True,
                    add_eos: bool = True) -> dict[str, np.ndarray]:
  """Token-level arrays of a document.

  Returns:
    tokens: int32 [n].
    loss_mask: int32 [n], 1 on tokens overlapping the target (and on EOS when there is a
      target); all 1 except BOS for plain documents.
    entity_ids: int32 [n], k (1-based, in text order) inside the k-th entity, else 0.
    entity_positions: int32 [n], 1..len inside an entity, else 0 (intra-entity position).
    entity_kinds: int32 [n], ENTITY_KINDS code of the entity, else 0.
    entity_spans: int32 [num_entities, 2], token [start, end) of each entity.
    entity_span_kinds: int32 [num_entities], ENTITY_KINDS code of each entity.
    entity_span_items: int32 [num_entities], item id of item entities, else 0.
    entity_span_roles: int32 [num_entities], ENTITY_ROLES code (0: no role).
  """
  enc = doc.encoding
  if enc is None or doc.encoding_flags != (add_bos, add_eos):
    enc = tokenizer.encode(doc.text, add_bos=add_bos, add_eos=add_eos)
  ids, offsets = enc.ids, enc.offsets
  n = len(ids)
  starts, ends = offsets[:, 0], offsets[:, 1]
  has_target = doc.target_start < len(doc.text)
  loss = (ends > doc.target_start) if has_target else np.zeros(n, bool)
  if has_target and add_eos and n:
    loss[-1] = True
  if add_bos and n:
    loss[0] = False
  entity_ids = np.zeros(n, np.int32)
  entity_positions = np.zeros(n, np.int32)
  entity_kinds = np.zeros(n, np.int32)
  token_spans = np.zeros((len(doc.spans), 2), np.int32)
  if doc.spans:
    span_starts = np.array([s.start for s in doc.spans])
    span_ends = np.array([s.end for s in doc.spans])
    # Token t overlaps [s, e) iff ends[t] > s and starts[t] < e. Zero-width tokens (BOS/EOS)
    # never belong to an entity.
    real = ends > starts
    ends_real = np.where(real, ends, -1)
    first = np.searchsorted(np.maximum.accumulate(ends_real), span_starts, side="right")
    last = np.searchsorted(starts, span_ends, side="left")
    prev_end = 0
    for k, (a, b) in enumerate(zip(first.tolist(), last.tolist())):
      a = max(a, prev_end)  # a token straddling two entities belongs to the first
      b = max(a, b)
      token_spans[k] = (a, b)
      entity_ids[a:b] = k + 1
      entity_positions[a:b] = np.arange(1, b - a + 1)
      entity_kinds[a:b] = ENTITY_KINDS[doc.spans[k].kind]
      prev_end = b
  meta = np.array([(ENTITY_KINDS[s.kind], s.item, ENTITY_ROLES.get(s.role, 0))
                   for s in doc.spans], np.int32).reshape(-1, 3)
  return {
      "tokens": ids.astype(np.int32),
      "loss_mask": loss.astype(np.int32),
      "entity_ids": entity_ids,
      "entity_positions": entity_positions,
      "entity_kinds": entity_kinds,
      "entity_spans": token_spans,
      "entity_span_kinds": meta[:, 0].copy(),
      "entity_span_items": meta[:, 1].copy(),
      "entity_span_roles": meta[:, 2].copy(),
  }
