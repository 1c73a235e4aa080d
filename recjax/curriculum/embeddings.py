"""Item-text embeddings for semantic IDs: one float32 row per item, computed offline.

Three encoders, chosen by name (`embed_texts(texts, method=...)`):
- "tfidf_svd": TF-IDF over word uni- and bigrams, reduced by truncated SVD (LSA) to `dim`.
  Needs nothing but the catalogue; deterministic per seed.
- "wordllama": wordllama's `l2_supercat` model (256-d Llama-2-token embeddings, mean-pooled),
  loaded from the files inside its wheel, never from the network.
- "lm": a language model's final-layer hidden states (after the final norm: what the output
  projection reads, and what transformers returns as `hidden_states[-1]`), mean-pooled over each
  text's tokens (`lm_embed`). `lm_path` is a recjax lm / glm / calrec workdir (its latest
  checkpoint and the workdir's own tokenizer; the run's task is rebuilt, so its data must be
  readable, as for `recjax.workdir.open_workdir`) or a local Hugging Face directory
  (config.json, *.safetensors, tokenizer.json). Each text is encoded as BOS + its tokens, cut to
  `max_len` tokens (BOS included; the rest of a longer text is dropped); the pooling skips BOS
  and padding, so a text embeds the same alone or in a batch of longer texts. Batches of
  `batch_size` texts run through one jitted forward (`recjax.eval.calrec.embed_rows`, CALRec's
  dense-retrieval path), in float32. Width: the model's hidden size.

Rows are L2-normalised, so residual quantisation sees directions rather than text lengths. A text
with no token the encoder knows embeds to the zero vector (the collision level of the semantic IDs
still gives it a unique code).

Items without text: `item_texts(catalogue, missing_text=...)` decides. "fallback" (default) embeds
the catalogue's fallback text ("item <raw id>"); "error" raises, naming the items.
"""
from __future__ import annotations

import functools
import os
import pathlib
from typing import Sequence

import numpy as np

METHODS = ("tfidf_svd", "wordllama", "lm")
LM_PATH_KEY = "embed.lm_path"  # the config key named in `lm_embed`'s errors
LM_TASKS = ("lm", "glm", "calrec")  # workdir tasks whose model is the LLM backbone
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


def lm_source(path: str, key: str = LM_PATH_KEY) -> str:
  """"workdir" or "hf": what kind of language-model directory `path` is.

  Raises ValueError naming `key` and `path` when it is empty, missing, or neither a recjax
  workdir (config.json naming its task, or checkpoints/) nor a Hugging Face model directory
  (config.json, *.safetensors, tokenizer.json).
  """
  from recjax.train import trainer  # pylint: disable=g-import-not-at-top
  if not path:
    raise ValueError(f"config.{key} is empty: embed.method='lm' needs a recjax lm/glm/calrec "
                     "workdir or a local Hugging Face model directory (config.json, "
                     "*.safetensors, tokenizer.json)")
  root = pathlib.Path(path)
  if not root.is_dir():
    raise ValueError(f"config.{key}={path!r} is not a directory (expected a recjax "
                     "lm/glm/calrec workdir or a local Hugging Face model directory)")
  if trainer.is_recjax_workdir(str(root)):
    return "workdir"
  missing = [name for name in ("config.json", "tokenizer.json") if not (root / name).is_file()]
  if not any(root.glob("*.safetensors")):
    missing.append("*.safetensors")
  if missing:
    raise ValueError(f"config.{key}={path!r} is neither a recjax workdir (config.json naming "
                     "its task, checkpoints/) nor a Hugging Face model directory: it has no "
                     f"{', '.join(missing)}")
  return "hf"


def load_lm(path: str, key: str = LM_PATH_KEY, dtype: str = "float32"):
  """(model, tokenizer, mesh) of the language model in `path` (see `lm_source`).

  A workdir gives its latest checkpoint's model (the task rebuilt from its config.json, on the
  run's mesh where this machine has its device count, else data-parallel over every device) and
  its own tokenizer; a Hugging Face directory its weights (replicated) and tokenizer.json.
  `dtype` is the compute dtype (float32 by default: the codes should not hinge on bf16 rounding).
  """
  # pylint: disable=g-import-not-at-top
  from recjax import workdir as workdir_lib
  from recjax.models import hf_checkpoint
  from recjax.text import tokenizer as tokenizer_lib
  from recjax.train import sharding as shard_lib
  # pylint: enable=g-import-not-at-top
  if lm_source(path, key) == "hf":
    mesh = shard_lib.make_mesh(dict(data=-1))
    model = hf_checkpoint.load_hf_checkpoint(path, mesh=mesh, dtype=dtype)
    return model, tokenizer_lib.load_tokenizer(os.path.join(path, "tokenizer.json")), mesh
  try:
    config = workdir_lib.read_config(path)
    if config.task not in LM_TASKS:
      raise workdir_lib.WorkdirError(
          f"a workdir of task {config.task!r}, not of a language model (one of {LM_TASKS})")
    try:
      shard_lib.make_mesh(config.mesh)
      mesh = None  # the run's own mesh
    except ValueError:  # trained on another number of devices
      mesh = dict(data=-1)
    opened = workdir_lib.open_workdir(path, mesh=mesh, dtype=dtype)
  except workdir_lib.WorkdirError as e:
    raise ValueError(f"config.{key}={path!r}: {e}") from e
  return opened.model, opened.task.tokenizer, opened.mesh


def lm_embed(texts: Sequence[str], path: str, max_len: int = 128, batch_size: int = 64,
             key: str = LM_PATH_KEY) -> np.ndarray:
  """float32 [len(texts), hidden_size]: the final-normed last-layer hidden states of the model
  in `path`, mean-pooled over each text's tokens (not BOS, not padding), L2 rows.

  Each row is BOS + the text's first `max_len - 1` tokens; a text with no token embeds to zeros.
  Every batch is padded to one width (the longest row, rounded up to 16: one compile per call).
  `key` is the config key named in errors about `path`.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from recjax.eval import calrec  # pylint: disable=g-import-not-at-top
  if int(max_len) < 2:
    raise ValueError(f"lm_embed: max_len={max_len} leaves no token after BOS (must be >= 2)")
  if int(batch_size) < 1:
    raise ValueError(f"lm_embed: batch_size={batch_size} must be >= 1")
  model, tokenizer, mesh = load_lm(path, key)
  rows, masks = [], []
  for text in texts:
    ids = tokenizer.encode(str(text), add_bos=True).ids[:int(max_len)]
    rows.append(np.asarray(ids, np.int32))
    masks.append((np.arange(len(ids)) > 0).astype(np.int32))  # every token after BOS
  with jax.set_mesh(mesh):
    out = calrec.embed_rows(model, rows, masks, layer=True, batch_size=int(batch_size),
                            mesh=mesh)
  return _l2_rows(np.asarray(out, np.float32))


def embed_texts(texts: Sequence[str], method: str = "tfidf_svd", dim: int = 256,
                seed: int = 0, lm_path: str = "", max_len: int = 128,
                batch_size: int = 64) -> np.ndarray:
  """float32 [len(texts), d] embeddings by `method` ("tfidf_svd", "wordllama" or "lm").

  `dim` is the SVD size for "tfidf_svd"; "wordllama" is always 256-d; "lm" is the hidden size
  of the model in `lm_path`, run on `batch_size` texts at a time, each cut to `max_len` tokens.
  """
  if method == "tfidf_svd":
    return tfidf_svd(texts, dim=dim, seed=seed)
  if method == "wordllama":
    return wordllama_embed(texts)
  if method == "lm":
    return lm_embed(texts, lm_path, max_len=max_len, batch_size=batch_size)
  raise ValueError(f"unknown embedding method {method!r}; choose one of {METHODS}")


def _l2_rows(x: np.ndarray) -> np.ndarray:
  norms = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.where(norms > 0, norms, 1.0)
