"""Retrieval of catalogue items from generated text or embeddings, and merging ranked lists.

A generative recommender writes item texts (titles); evaluating it as a ranker needs catalogue
item ids. This module maps generations to ranked item ids and merges several ranked lists into
one full-catalogue ranking that `recjax.eval.metrics.ranking_metrics` can score:

- `ExactMatch`: items whose title equals the generation after `normalize_title`.
- `BM25`: lexical retrieval with `bm25s` (the catalogue is indexed once, queries are scored
  against every item), top-k items with their scores.
- `dense_search`: embeddings [B, D] against every catalogue item's [N, D], cosine or dot
  product, top-k or the full ranking.
- `round_robin_merge` / `merged_target_ranks`: CALRec's quasi-round-robin merge of L ranked
  lists per user (e.g. BM25 on each of L sampled generations).

Conventions, as everywhere in recjax: item ids are 1..num_items and 0 is padding; a ranked list
is an int array whose rows are item ids best first, with 0 marking an empty slot (and, where
scores come with it, a score of -inf there). `item_texts[i]` is item i's text, `item_texts[0]`
(the padding item) is ignored, as in `recjax.text.item_text.ItemCatalogue.texts`. Ties are
broken by the lower item id, so every result is deterministic.
"""
from __future__ import annotations

import unicodedata
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

EMPTY = 0  # item id of an empty slot in a ranked list


def normalize_title(text: str) -> str:
  """Unicode NFKC, case-folded, white space collapsed: the form exact matching compares."""
  return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _top_k_rows(scores: np.ndarray, k: int, keep_zero: bool) -> tuple[np.ndarray, np.ndarray]:
  """Item ids (1-based columns) and scores of each row's k best, ties by lower id."""
  k = min(k, scores.shape[1])
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  top = np.take_along_axis(scores, order, axis=1)
  ids = (order + 1).astype(np.int64)
  empty = ~np.isfinite(top) if keep_zero else ~(top > 0)
  return np.where(empty, EMPTY, ids), np.where(empty, -np.inf, top).astype(np.float32)


class ExactMatch:
  """Looks generations up among the catalogue's normalised titles."""

  def __init__(self, item_texts: Sequence[str]):
    self.num_items = len(item_texts) - 1
    self._items: dict[str, list[int]] = {}
    for item in range(1, len(item_texts)):
      key = normalize_title(str(item_texts[item]))
      if key:
        self._items.setdefault(key, []).append(item)

  def search(self, queries: Sequence[str]) -> np.ndarray:
    """[Q, M] item ids whose title equals each query (several items may share one title),
    lower ids first, 0-padded to the most matches of any query (M >= 1)."""
    matches = [self._items.get(normalize_title(q), []) for q in queries]
    out = np.zeros((len(queries), max([1] + [len(m) for m in matches])), np.int64)
    for row, items in enumerate(matches):
      out[row, :len(items)] = items
    return out


class BM25:
  """A BM25 index of the catalogue's item texts (`bm25s`), built once, queried many times.

  Text is lower-cased and split into words of two or more word characters; English stop words
  are dropped (`stopwords=""` keeps them). An item whose text shares no word with a query is not
  retrieved for it (score 0 means no evidence, not a weak match).
  """

  def __init__(self, item_texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75,
               method: str = "lucene", stopwords: str = "en"):
    import bm25s  # pylint: disable=g-import-not-at-top
    from bm25s.tokenization import Tokenizer  # pylint: disable=g-import-not-at-top
    self.num_items = len(item_texts) - 1
    if self.num_items < 1:
      raise ValueError("BM25 needs at least one catalogue item (item_texts[1:] is empty)")
    self._tokenizer = Tokenizer(stopwords=stopwords or None)
    corpus = self._tokenizer.tokenize([str(t) for t in item_texts[1:]], show_progress=False,
                                      return_as="ids")
    self._index = bm25s.BM25(k1=k1, b=b, method=method)
    self._index.index(corpus, show_progress=False)

  def scores(self, queries: Sequence[str]) -> np.ndarray:
    """float32 [Q, num_items]: the BM25 score of every item (column i - 1 = item i)."""
    tokens = self._tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False,
                                      return_as="ids")
    out = np.zeros((len(tokens), self.num_items), np.float32)
    for row, query in enumerate(tokens):
      query = [t for t in query if t != 0]  # 0: the tokenizer's id for unknown words
      if query:
        out[row] = self._index.get_scores(query)
    return out

  def search(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best items per query: (ids [Q, k], scores [Q, k]), 0 / -inf where fewer match."""
    return _top_k_rows(self.scores(queries), k, keep_zero=False)


def dense_scores(queries: jax.Array, items: jax.Array, metric: str = "cosine") -> jax.Array:
  """float32 [B, N]: similarity of each query [B, D] to each item [N, D] (row r = item r + 1).

  metric: "cosine" (rows L2-normalised) or "dot".
  """
  if metric not in ("cosine", "dot"):
    raise ValueError(f"metric={metric!r} is unknown; choose 'cosine' or 'dot'")
  queries, items = jnp.asarray(queries, jnp.float32), jnp.asarray(items, jnp.float32)
  if metric == "cosine":
    queries = queries / jnp.maximum(jnp.linalg.norm(queries, axis=-1, keepdims=True), 1e-12)
    items = items / jnp.maximum(jnp.linalg.norm(items, axis=-1, keepdims=True), 1e-12)
  return queries @ items.T


def dense_search(queries: jax.Array, items: jax.Array, k: int | None = None,
                 metric: str = "cosine") -> tuple[np.ndarray, np.ndarray]:
  """(ids [B, k], scores [B, k]) of each query's k most similar items; k=None ranks all N.

  Row r of `items` is item id r + 1 (pass an item table without its padding row 0).
  """
  scores = np.asarray(dense_scores(queries, items, metric))
  return _top_k_rows(scores, scores.shape[1] if k is None else k, keep_zero=True)


def _as_lists(ids: np.ndarray, list_scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
  """ids as [B, L, K] and the list visiting order [B, L] (best list first, ties by index)."""
  ids = np.asarray(ids)
  if ids.ndim == 2:
    ids = ids[:, None, :]
  if ids.ndim != 3:
    raise ValueError(f"ranked lists must be [B, K] or [B, L, K] item ids, got shape {ids.shape}")
  if list_scores is None:
    order = np.broadcast_to(np.arange(ids.shape[1]), ids.shape[:2])
  else:
    list_scores = np.asarray(list_scores, np.float64)
    if list_scores.shape != ids.shape[:2]:
      raise ValueError(f"list_scores must be [B, L] = {ids.shape[:2]}, got {list_scores.shape}")
    order = np.argsort(-list_scores, axis=1, kind="stable")
  return ids, order


def _merged_heads(ids: np.ndarray, list_scores: np.ndarray | None,
                  num_items: int) -> list[list[int]]:
  ids, order = _as_lists(ids, list_scores)
  if ids.size and (ids.min() < 0 or ids.max() > num_items):
    raise ValueError(f"ranked lists hold ids outside 0..{num_items}")
  heads = []
  for row in range(ids.shape[0]):
    # Round r visits every list's rank-r item, lists in list-score order.
    sequence = ids[row][order[row]].T.reshape(-1)
    seen, head = set(), []
    for item in sequence.tolist():
      if item != EMPTY and item not in seen:
        seen.add(item)
        head.append(item)
    heads.append(head)
  return heads


def _fallback_order(num_items: int, fallback_scores: np.ndarray | None) -> np.ndarray:
  """Item ids 1..num_items in the order unretrieved items follow the merged lists."""
  if fallback_scores is None:
    return np.arange(1, num_items + 1)
  fallback_scores = np.asarray(fallback_scores, np.float64)
  if fallback_scores.shape != (num_items + 1,):
    raise ValueError(f"fallback_scores must be [num_items + 1] = [{num_items + 1}] (index = "
                     f"item id), got {fallback_scores.shape}")
  return 1 + np.argsort(-fallback_scores[1:], kind="stable")


def round_robin_merge(ids: np.ndarray, list_scores: np.ndarray | None = None, *,
                      num_items: int, fallback_scores: np.ndarray | None = None) -> np.ndarray:
  """Merges each user's L ranked lists into one ranking of the whole catalogue.

  Args:
    ids: [B, L, K] (or [B, K] for one list) item ids, each list best first, 0 = empty slot.
    list_scores: [B, L] score of each list (e.g. the log-probability of the generation it was
      retrieved for); None = the lists' own order.
    num_items: catalogue size; the result holds every id 1..num_items once.
    fallback_scores: [num_items + 1] (index = item id, e.g. training popularity): the order of
      the items no list retrieved, best first, ties by lower id. None = ascending item id.

  Returns:
    int64 [B, num_items]: every list's rank-1 item in list-score order (ties: the earlier list),
    then every rank-2 item, ..., skipping items already placed; then the unretrieved items.
    For large catalogues score with `merged_target_ranks`, which never builds this array.
  """
  rest_order = _fallback_order(num_items, fallback_scores)
  out = np.zeros((len(ids), num_items), np.int64)
  for row, head in enumerate(_merged_heads(ids, list_scores, num_items)):
    out[row, :len(head)] = head
    out[row, len(head):] = rest_order[~np.isin(rest_order, head)]
  return out


def merged_target_ranks(ids: np.ndarray, targets: np.ndarray,
                        list_scores: np.ndarray | None = None, *, num_items: int,
                        fallback_scores: np.ndarray | None = None) -> np.ndarray:
  """0-based rank of each target [B] in `round_robin_merge(ids, list_scores, ...)`'s ranking,
  without building it: ranks for `recjax.eval.metrics.ranking_metrics`."""
  targets = np.asarray(targets)
  if targets.shape != (len(ids),):
    raise ValueError(f"targets must be [B] = [{len(ids)}], got {targets.shape}")
  if targets.size and (targets.min() < 1 or targets.max() > num_items):
    raise ValueError(f"targets must be item ids in 1..{num_items}")
  rest_order = _fallback_order(num_items, fallback_scores)
  position = np.empty(num_items + 1, np.int64)
  position[rest_order] = np.arange(num_items)
  ranks = np.empty(len(targets), np.int64)
  for row, head in enumerate(_merged_heads(ids, list_scores, num_items)):
    target = int(targets[row])
    if target in head:
      ranks[row] = head.index(target)
    else:  # after the head, among the unretrieved items in fallback order
      placed = position[np.asarray(head, np.int64)]
      ranks[row] = len(head) + position[target] - int(np.sum(placed < position[target]))
  return ranks
