"""recjax.eval.retrieval on hand-made catalogues: exact match, BM25 (real bm25s), dense, merge."""
import numpy as np
import pytest

from recjax.eval import metrics, retrieval

# item_texts[i] is item i's text; index 0 is the padding item.
CATALOGUE = ["", "red wool scarf", "blue cotton shirt", "red cotton socks", "zebra print mug"]


def test_exact_match_normalises_and_keeps_every_item_of_a_shared_title():
  assert retrieval.normalize_title("  Toy\tStory  (1995) ") == "toy story (1995)"
  assert retrieval.normalize_title("ﬁsh STRASSE") == retrieval.normalize_title("fish straße")
  index = retrieval.ExactMatch(["", "Toy Story", "Heat", "toy  story", "Casino"])
  np.testing.assert_array_equal(index.search(["TOY STORY", "Jaws", " heat"]),
                                [[1, 3], [0, 0], [2, 0]])
  assert index.search(["Jaws"]).shape == (1, 1)  # always at least one (empty) slot


def _bm25_lucene(query_words, docs, k1=1.5, b=0.75):
  """bm25s's 'lucene' scoring by hand: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
  term weight tf / (tf + k1 * (1 - b + b * len / mean len))."""
  n = len(docs)
  mean_len = np.mean([len(d) for d in docs])
  out = np.zeros(n)
  for word in set(query_words):
    df = sum(word in d for d in docs)
    if not df:
      continue
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
    for i, d in enumerate(docs):
      tf = d.count(word)
      out[i] += idf * tf / (tf + k1 * (1 - b + b * len(d) / mean_len))
  return out


def test_bm25_ranks_the_item_sharing_the_rare_word_first():
  index = retrieval.BM25(CATALOGUE)
  ids, scores = index.search(["a mug with a zebra on it", "cotton", "red socks", "qwerty"], k=3)
  assert ids[0, 0] == 4 and list(ids[0, 1:]) == [0, 0]  # nothing else shares a word
  np.testing.assert_array_equal(ids[1], [2, 3, 0])  # a tie: the lower id first
  assert scores[1, 0] == scores[1, 1] > 0 and scores[1, 2] == -np.inf
  np.testing.assert_array_equal(ids[2], [3, 1, 0])  # both words beat one
  np.testing.assert_array_equal(ids[3], [0, 0, 0])  # no known word: nothing retrieved
  docs = [t.split() for t in CATALOGUE[1:]]
  for row, query in enumerate([["mug", "zebra"], ["cotton"], ["red", "socks"]]):
    want = _bm25_lucene(query, docs)
    np.testing.assert_allclose(index.scores([" ".join(query)])[0], want, rtol=1e-5)
  assert index.search(["red"], k=10)[0].shape == (1, 4)  # k is capped at the catalogue


def test_dense_search_cosine_dot_and_full_ranking():
  items = np.array([[2.0, 0.0], [1.0, 1.0], [0.0, -1.0]])  # items 1, 2, 3
  queries = np.array([[1.0, 0.2], [0.0, 1.0]])
  ids, scores = retrieval.dense_search(queries, items, k=2)
  np.testing.assert_array_equal(ids, [[1, 2], [2, 1]])
  norm = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  cosine = norm(queries) @ norm(items).T
  np.testing.assert_allclose(scores, np.take_along_axis(cosine, ids - 1, axis=1), rtol=1e-6)
  ids, scores = retrieval.dense_search(queries, items, metric="dot")  # all items
  np.testing.assert_array_equal(ids, [[1, 2, 3], [2, 1, 3]])
  np.testing.assert_allclose(scores[0], [2.0, 1.2, -0.2], rtol=1e-6)
  with pytest.raises(ValueError, match="metric='l2'"):
    retrieval.dense_scores(queries, items, "l2")


def test_round_robin_merge_by_hand():
  # One user, two lists: A (generation log-prob -1.0) and B (-0.5, so visited first).
  ids = np.array([[[5, 2, 0], [2, 7, 3]]])
  merged = retrieval.round_robin_merge(ids, np.array([[-1.0, -0.5]]), num_items=8)
  # Round 1: B's 2, A's 5; round 2: B's 7, A's 2 (placed); round 3: B's 3, A's empty slot;
  # then the unretrieved items in ascending id.
  np.testing.assert_array_equal(merged, [[2, 5, 7, 3, 1, 4, 6, 8]])
  merged = retrieval.round_robin_merge(ids, None, num_items=8)  # the lists' own order
  np.testing.assert_array_equal(merged, [[5, 2, 7, 3, 1, 4, 6, 8]])
  popularity = np.array([0, 1, 0, 0, 5, 0, 3, 0, 3])  # index = item id
  merged = retrieval.round_robin_merge(ids, np.array([[-1.0, -0.5]]), num_items=8,
                                       fallback_scores=popularity)
  np.testing.assert_array_equal(merged, [[2, 5, 7, 3, 4, 6, 8, 1]])
  ranks = retrieval.merged_target_ranks(np.repeat(ids, 3, 0), np.array([7, 6, 1]),
                                        np.array([[-1.0, -0.5]] * 3), num_items=8,
                                        fallback_scores=popularity)
  np.testing.assert_array_equal(ranks, [2, 5, 7])
  m = metrics.ranking_metrics(ranks, ks=(3,))
  assert m["hr@3"] == pytest.approx(1 / 3) and m["mrr@3"] == pytest.approx(1 / 9)
  with pytest.raises(ValueError, match="outside 0..8"):
    retrieval.round_robin_merge(np.array([[9]]), num_items=8)


@pytest.mark.parametrize("with_scores,with_fallback", [(False, False), (True, True)])
def test_merged_target_ranks_equal_positions_in_the_full_merge(with_scores, with_fallback):
  rng = np.random.default_rng(0)
  n, b = 20, 6
  ids = rng.integers(0, n + 1, size=(b, 3, 4))  # duplicates and empty slots included
  list_scores = rng.normal(size=(b, 3)) if with_scores else None
  fallback = rng.integers(0, 4, size=n + 1) if with_fallback else None
  merged = retrieval.round_robin_merge(ids, list_scores, num_items=n, fallback_scores=fallback)
  assert all(sorted(row) == list(range(1, n + 1)) for row in merged.tolist())
  for target in range(1, n + 1):
    targets = np.full(b, target)
    want = np.argmax(merged == targets[:, None], axis=1)
    got = retrieval.merged_target_ranks(ids, targets, list_scores, num_items=n,
                                        fallback_scores=fallback)
    np.testing.assert_array_equal(got, want)
