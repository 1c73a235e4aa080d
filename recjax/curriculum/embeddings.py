"""Item-text embeddings for semantic IDs: one float32 row per item, computed offline.

Two encoders, chosen by name (`embed_texts(texts, method=...)`):
- "tfidf_svd": TF-IDF over word uni- and bigrams, reduced by truncated SVD (LSA) to `dim`.
  Needs nothing but the catalogue; deterministic per seed.
- "wordllama": wordllama's `l2_supercat` model (256-d Llama-2-token embeddings, mean-pooled),
  loaded from the files inside its wheel, never from the network.

Rows are L2-normalised, so residual quantisation sees directions rather than text lengths. A text
with no token the encoder knows embeds to the zero vector (the collision level of the semantic IDs
still gives it a unique code).

Items without text: `item_texts(catalogue, missing_text=...)` decides. "fallback" (default) embeds
the catalogue's fallback text ("item <raw id>"); "error" raises, naming the items.
"""
from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import numpy as np

METHODS = ("tfidf_svd", "wordllama")
MISSING_TEXT_RULES = ("fallback", "error")


def item_texts(catalogue, missing_text: str = "fallback") -> list[str]:
  """The texts of items 1..num_items of a `recjax.text.item_text.ItemCatalogue`.

  Args:
    catalogue: the rendered item texts (`ItemCatalogue.build(data, config)`).
    missing_text: "fallback" embeds the catalogue's fallback text for items with no text in any
      chosen field; "error" raises ValueError naming them.
  """
  if missing_text not in MISSING_TEXT_RULES:
    raise ValueError(f"missing_text must be one of {MISSING_TEXT_RULES}, got {missing_text!r}")
  missing = np.flatnonzero(~np.asarray(catalogue.has_text[1:], bool)) + 1
  if len(missing) and missing_text == "error":
    shown = ", ".join(str(int(i)) for i in missing[:10])
    more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
    raise ValueError(
        f"{len(missing)} of {catalogue.num_items} items of '{catalogue.name}' have no text in "
        f"fields {list(catalogue.config.fields)}: item ids {shown}{more}; set "
        "missing_text='fallback' to embed their fallback text instead")
  return list(catalogue.texts[1:])


def tfidf_svd(texts: Sequence[str], dim: int = 256, seed: int = 0, min_df: int = 1,
              ngram_max: int = 2) -> np.ndarray:
  """TF-IDF (sublinear tf, word 1..ngram_max-grams) -> truncated SVD to `dim` -> L2 rows.

  `dim` shrinks to what the matrix rank allows (fewer items or terms than `dim`).
  """
  from sklearn.decomposition import TruncatedSVD  # pylint: disable=g-import-not-at-top
  from sklearn.feature_extraction.text import TfidfVectorizer  # pylint: disable=g-import-not-at-top
  if not texts:
    raise ValueError("tfidf_svd: no texts to embed")
  vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=min_df, ngram_range=(1, ngram_max),
                               dtype=np.float32)
  try:
    tfidf = vectorizer.fit_transform(list(texts))
  except ValueError as e:  # every text empty / only stop words
    raise ValueError(f"tfidf_svd: no terms in the {len(texts)} texts ({e})") from e
  k = min(dim, tfidf.shape[0] - 1, tfidf.shape[1] - 1)
  if k < 1:
    out = tfidf.toarray()  # one item or one term: nothing to reduce
  else:
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=7, random_state=seed)
    out = svd.fit_transform(tfidf)
  return _l2_rows(np.asarray(out, np.float32))


@functools.lru_cache(maxsize=1)
def _wordllama_model():
  import wordllama  # pylint: disable=g-import-not-at-top
  # wordllama looks for its tokenizer in <package>/tokenizer/ but the wheel ships it in
  # <package>/tokenizers/ (0.4.0); as cache_dir the package folder resolves both files locally.
  package = pathlib.Path(wordllama.__file__).parent
  return wordllama.WordLlama.load(cache_dir=package, disable_download=True)


def wordllama_embed(texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
  """wordllama l2_supercat 256-d mean-pooled embeddings, L2 rows (offline)."""
  model = _wordllama_model()
  out = model.embed(list(texts), norm=False, return_np=True, batch_size=batch_size)
  return _l2_rows(np.asarray(out, np.float32))


def embed_texts(texts: Sequence[str], method: str = "tfidf_svd", dim: int = 256,
                seed: int = 0) -> np.ndarray:
  """float32 [len(texts), d] embeddings by `method` ("tfidf_svd" or "wordllama").

  `dim` is the SVD size for "tfidf_svd"; "wordllama" is always 256-d.
  """
  if method == "tfidf_svd":
    return tfidf_svd(texts, dim=dim, seed=seed)
  if method == "wordllama":
    return wordllama_embed(texts)
  raise ValueError(f"unknown embedding method {method!r}; choose one of {METHODS}")


def _l2_rows(x: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norms > 0, norms, 1.0)
