"""Semantic IDs: RQ-KMeans codes are unique, seeded, and shrink the error level by level."""
from __future__ import annotations

import numpy as np
import pytest

from recjax.curriculum import embeddings
from recjax.curriculum import semantic_ids
from recjax.data import registry
from recjax.data.canonical import InteractionData, Sequences
from recjax.text.item_text import ItemCatalogue
from tests.datasets import require_data_dir

CONFIG = semantic_ids.RQKMeansConfig(levels=3, codebook_size=16, seed=0)


@pytest.fixture(scope="module")
def points():
  """300 points from 12 Gaussian blobs in 8-d, plus 6 exact duplicates (forced collisions)."""
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(12, 8))
  x = centers[rng.integers(0, 12, 300)] + 0.3 * rng.normal(size=(300, 8))
  return np.concatenate([x, x[:6]]).astype(np.float32)


@pytest.fixture(scope="module")
def ids(points):
  return semantic_ids.rq_kmeans(points, CONFIG)


def test_every_item_gets_a_unique_code(ids, points):
  codes = ids.codes[1:]
  assert codes.shape == (len(points), CONFIG.levels + 1)
  assert len({tuple(c) for c in codes}) == len(points)
  assert (ids.codes[0] == -1).all()
  # The 6 duplicates share their 3 quantised digits with their originals and differ in the last.
  n = len(points) - 6
  np.testing.assert_array_equal(codes[:6, :3], codes[n:, :3])
  assert (codes[:6, 3] != codes[n:, 3]).all()
  assert len(ids.item_of()) == len(points)


def test_collision_statistics_match_a_recount(ids, points):
  prefix = [tuple(c) for c in ids.codes[1:, :CONFIG.levels]]
  counts = {p: prefix.count(p) for p in set(prefix)}
  assert ids.collision_rate == pytest.approx(1 - len(counts) / len(points))
  assert ids.items_in_collision == sum(c for c in counts.values() if c > 1) >= 12
  assert ids.collision_size == max(counts.values())
  # The collision digit of a code group is 0..size-1, in item-id order.
  for p, c in counts.items():
    members = [i for i, q in enumerate(prefix) if q == p]
    assert ids.codes[1:, CONFIG.levels][members].tolist() == list(range(c))


def test_deterministic_per_seed(points, ids):
  again = semantic_ids.rq_kmeans(points, CONFIG)
  np.testing.assert_array_equal(again.codes, ids.codes)
  other = semantic_ids.rq_kmeans(points, semantic_ids.RQKMeansConfig(
      levels=3, codebook_size=16, seed=1))
  assert not np.array_equal(other.codes, ids.codes)


def test_reconstruction_error_falls_with_each_level(ids, points):
  errors = [s.reconstruction_mse for s in ids.levels]
  assert all(a > b for a, b in zip(errors, errors[1:])), errors
  # The reported error is the error of the sum of the chosen centroids.
  x = points.astype(np.float64)
  recon = np.zeros_like(x)
  for level, codebook in enumerate(ids.codebooks):
    recon += codebook[ids.codes[1:, level]]
    mse = ((x - recon) ** 2).sum(axis=1).mean()
    assert ids.levels[level].reconstruction_mse == pytest.approx(mse, rel=1e-4)
    assert ids.levels[level].relative_error == pytest.approx(
        mse / (x ** 2).sum(axis=1).mean(), rel=1e-4)


def test_utilisation_and_perplexity(ids):
  for s in ids.levels:
    assert s.k == 16 and s.shrunk_from is None
    assert 0 < s.utilisation <= 1 and s.used == round(s.utilisation * 16)
    assert 1 <= s.perplexity <= s.used
  codes = ids.codes[1:, 0]
  p = np.bincount(codes) / len(codes)
  p = p[p > 0]
  assert ids.levels[0].perplexity == pytest.approx(np.exp(-(p * np.log(p)).sum()))
  report = ids.report()
  assert "collision rate" in report and "level a: k=16" in report and "perplexity" in report


def test_tokens_render_and_parse(ids):
  token = ids.token(1)
  assert token.startswith("<a_") and "><b_" in token and "><d_" in token
  assert semantic_ids.parse_token(token, num_digits=4) == tuple(ids.codes[1])
  vocabulary = set(ids.vocabulary())
  for t in ids.tokens()[1:]:
    assert set(f"<{part}>" for part in t[1:-1].split("><")) <= vocabulary
  with pytest.raises(ValueError, match="outside 1..306"):
    ids.token(0)
  with pytest.raises(ValueError, match="part 1 is 'c_3'"):
    semantic_ids.parse_token("<a_1><c_3>")


def test_balanced_kmeans_fills_every_code_evenly(points, ids):
  config = semantic_ids.RQKMeansConfig(levels=3, codebook_size=16, seed=0, balanced=True)
  balanced = semantic_ids.rq_kmeans(points, config)
  n = len(points)
  for level in range(3):
    counts = np.bincount(balanced.codes[1:, level], minlength=16)
    assert counts.min() >= n // 16 and counts.max() <= n // 16 + 1, counts
    assert balanced.levels[level].perplexity > 15.9
  errors = [s.reconstruction_mse for s in balanced.levels]
  assert all(a > b for a, b in zip(errors, errors[1:])), errors
  assert len({tuple(c) for c in balanced.codes[1:]}) == n
  np.testing.assert_array_equal(semantic_ids.rq_kmeans(points, config).codes, balanced.codes)
  assert balanced.levels[2].perplexity > ids.levels[2].perplexity


def test_catalogue_smaller_than_codebook_shrinks_k():
  x = np.array([[1, 0], [0, 1], [1, 1], [1, 0], [2, 0]], np.float32)
  ids = semantic_ids.rq_kmeans(x, semantic_ids.RQKMeansConfig(levels=2, codebook_size=256))
  first = ids.levels[0]
  assert first.k == 4 and first.shrunk_from == 256  # 4 distinct points
  assert first.reconstruction_mse == pytest.approx(0.0, abs=1e-12)
  assert ids.levels[1].k == 1  # every residual is 0
  assert "shrunk from 256: only 4 distinct residuals" in ids.report()
  assert len({tuple(c) for c in ids.codes[1:]}) == 5
  assert ids.codes[1, :2].tolist() == ids.codes[4, :2].tolist()  # the duplicate pair


def test_bad_embeddings_are_named():
  with pytest.raises(ValueError, match=r"item ids \[2\] are not finite"):
    semantic_ids.rq_kmeans(np.array([[0.0, 1.0], [np.nan, 0.0]]))
  with pytest.raises(ValueError, match="non-empty"):
    semantic_ids.rq_kmeans(np.zeros((0, 4)))


TEXTS = ["red ballpoint pen blue ink", "blue ballpoint pen red ink", "heavy duty stapler",
         "stapler for heavy office use", "printer paper letter size", "paper for laser printer"]


def test_tfidf_svd_embeddings_are_seeded_unit_rows():
  a = embeddings.embed_texts(TEXTS, "tfidf_svd", dim=4, seed=0)
  np.testing.assert_array_equal(a, embeddings.embed_texts(TEXTS, "tfidf_svd", dim=4, seed=0))
  assert a.shape == (6, 4) and a.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
  sim = a @ a.T
  assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[2, 4]
  # dim larger than the rank shrinks to items - 1.
  assert embeddings.tfidf_svd(TEXTS, dim=256).shape == (6, 5)


def test_wordllama_embeds_offline():
  a = embeddings.embed_texts(TEXTS + [""], "wordllama")
  assert a.shape == (7, 256)
  np.testing.assert_allclose(np.linalg.norm(a[:6], axis=1), 1.0, rtol=1e-5)
  assert not a[6].any()  # no tokens -> zero vector
  sim = a @ a.T
  assert sim[0, 1] > sim[0, 4] and sim[2, 3] > sim[2, 0] and sim[4, 5] > sim[4, 2]


def _tiny_data(titles):
  n = len(titles)
  return InteractionData(
      name="tiny", sequences=Sequences.from_lists([list(range(1, n + 1))]),
      user_ids=np.array(["u0"]), item_ids=np.array(["<pad>"] + [f"i{i}" for i in range(n)]),
      item_text={"title": np.array([""] + titles)})


def test_items_without_text_error_names_them_or_fall_back():
  catalogue = ItemCatalogue.build(_tiny_data(["pen", "", "stapler", ""]))
  with pytest.raises(ValueError, match=r"2 of 4 items of 'tiny' have no text .*item ids 2, 4"):
    embeddings.item_texts(catalogue, missing_text="error")
  assert embeddings.item_texts(catalogue) == ["pen", "item i1", "stapler", "item i3"]
  with pytest.raises(ValueError, match="missing_text must be one of"):
    embeddings.item_texts(catalogue, missing_text="skip")
  with pytest.raises(ValueError, match="unknown embedding method 'bert'"):
    embeddings.embed_texts(TEXTS, "bert")


@pytest.fixture(scope="module")
def office_catalogue():
  data = registry.load_dataset({"name": "amazon_office"}, require_data_dir("amazon_office"))
  return data, ItemCatalogue.build(data)


@pytest.mark.parametrize("method", ["tfidf_svd", "wordllama"])
def test_real_catalogue_amazon_office(office_catalogue, method):
  data, catalogue = office_catalogue
  ids = semantic_ids.semantic_ids_for_catalogue(catalogue, method=method)
  assert ids.num_items == data.num_items == 2420
  assert len(set(ids.tokens()[1:])) == data.num_items
  assert len(ids.levels) == 3
  for s in ids.levels:
    assert s.k == 256 and s.used > 128 and s.perplexity > 1
  assert 0 <= ids.collision_rate < 0.5
  print(ids.report())
