"""Semantic IDs by residual k-means (RQ-KMeans, as GRID and OneRec) plus a collision level.

Level 1 clusters the item embeddings into `codebook_size` centroids; each next level clusters the
residuals (embedding minus the sum of the centroids chosen so far). After `levels` levels, items
that share the whole code get one more digit, their index among those items in item-id order
(the collision level), so every item's code is unique. Codes render as tokens, one per level with
the level's letter: `<a_12><b_3><c_200><d_0>`.

Small catalogues: a level whose residuals have fewer distinct rows than `codebook_size` uses one
code per distinct row (k shrinks; the report says so), which makes that level exact.

    ids = rq_kmeans(embeddings, RQKMeansConfig(levels=3, codebook_size=256, seed=0))
    ids.token(item)       # "<a_12><b_3><c_200><d_0>" for item id 1..num_items
    print(ids.report())   # collision rate, utilisation, perplexity, reconstruction per level

`SemanticIds` is what every quantiser returns (RQ-KMeans here, the RQ-VAE in
recjax/curriculum/rqvae.py, the top-k sparse autoencoder in recjax/curriculum/sae.py); they share
`with_collision_level` and `level_stats`, and `ids.save(path)` / `SemanticIds.load(path)` keep
codes, codebooks and statistics in one .npz file.
"""
from __future__ import annotations

import dataclasses
import json
import string
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class RQKMeansConfig:
  """Residual k-means knobs (docs/curriculum.md)."""

  levels: int = 3  # quantisation levels before the collision level; GRID/TIGER use 3
  codebook_size: int = 256  # centroids per level; 256 as GRID/TIGER
  seed: int = 0  # k-means++ initialisation seed (level l uses seed + l)
  max_iter: int = 100  # Lloyd iterations per level (sklearn default 300; 100 converges here)
  n_init: int = 1  # k-means restarts per level, best inertia kept; 1 is deterministic and fast
  collision_level: bool = True  # append the index among items sharing a code (unique codes)
  # Balanced k-means (OneRec): every code of a level gets n/k items (+-1), cluster by cluster
  # taking the nearest unassigned items. Fewer collisions than plain k-means, whose deeper
  # levels spend centroids on outliers; False (plain k-means, GRID's RQ-KMeans) by default.
  balanced: bool = False


@dataclasses.dataclass(frozen=True)
class LevelStats:
  """What one level did."""

  k: int  # centroids used at this level (codebook_size, or fewer: see `shrunk_from`)
  used: int  # distinct codes assigned
  utilisation: float  # used / codebook_size
  perplexity: float  # exp(entropy of the code distribution); codebook_size at best
  reconstruction_mse: float  # mean squared norm of the residual after this level
  relative_error: float  # reconstruction_mse / mean squared norm of the input embeddings
  shrunk_from: int | None = None  # codebook_size when k was shrunk to the distinct residuals


@dataclasses.dataclass(frozen=True)
class SemanticIds:
  """Codes of items 1..num_items; row 0 (padding) is all -1."""

  codes: np.ndarray  # int32 [num_items + 1, levels (+1 with the collision level)]
  # Per level, float32 [k, dim]; one shared dictionary [latents, dim] for the sparse autoencoder.
  codebooks: list[np.ndarray]
  levels: list[LevelStats]
  collision_rate: float  # 1 - distinct codes / items, before the collision level
  items_in_collision: int  # items that share their code with another, before the collision level
  collision_size: int  # codes of the collision level (the largest group of shared codes)
  config: Any  # the quantiser's config (RQKMeansConfig, RQVAEConfig, SAEConfig; a dict if loaded)
  method: str = "RQ-KMeans"  # the quantiser, first word of the report
  codebook_size: int = 0  # codes a level may use; 0 = config.codebook_size
  notes: tuple[str, ...] = ()  # extra report lines (how the quantiser was trained)
  # Leading digits that index one shared dictionary (the SAE's k positions when its codes use
  # one vocabulary): as LM tokens they share one range (recjax/text/semantic_text.py). 0: none.
  shared_digits: int = 0

  @property
  def num_items(self) -> int:
    return len(self.codes) - 1

  @property
  def num_digits(self) -> int:
    return self.codes.shape[1]

  @property
  def size(self) -> int:
    """Codes a level may use (the codebook size, or the SAE's latent count)."""
    if self.codebook_size:
      return int(self.codebook_size)
    config = self.config
    return int(config["codebook_size"] if isinstance(config, dict) else config.codebook_size)

  def token(self, item: int) -> str:
    """`<a_12><b_3><c_200><d_0>` for item id `item` (1..num_items)."""
    if not 1 <= item <= self.num_items:
      raise ValueError(f"item id {item} outside 1..{self.num_items}")
    return "".join(f"<{_letter(l)}_{c}>" for l, c in enumerate(self.codes[item]))

  def tokens(self) -> list[str]:
    """`token(i)` for every item; index 0 is "" (padding)."""
    return [""] + [self.token(i) for i in range(1, self.num_items + 1)]

  def vocabulary(self) -> list[str]:
    """Every token `token()` can write, level by level (the LM's code tokens are
    recjax/text/semantic_text.py's `REC<n>`)."""
    sizes = [s.k for s in self.levels]
    if self.num_digits > len(self.levels):
      sizes.append(self.collision_size)
    return [f"<{_letter(l)}_{c}>" for l, size in enumerate(sizes) for c in range(size)]

  def item_of(self) -> dict[tuple[int, ...], int]:
    """Code tuple -> item id (unique with the collision level)."""
    return {tuple(int(c) for c in self.codes[i]): i for i in range(1, self.num_items + 1)}

  def report(self) -> str:
    """Human-readable lines: collisions, then per level k, utilisation, perplexity, error."""
    lines = [f"{self.method} {len(self.levels)} x {self.size} over "
             f"{self.num_items:,} items: collision rate {self.collision_rate:.4f} "
             f"({self.items_in_collision:,} items share a code) before the collision level"]
    for l, s in enumerate(self.levels):
      shrunk = (f" (shrunk from {s.shrunk_from}: only {s.k} distinct residuals)"
                if s.shrunk_from else "")
      lines.append(f"level {_letter(l)}: k={s.k}{shrunk}, used {s.used} "
                   f"(utilisation {s.utilisation:.3f}), perplexity {s.perplexity:.1f}, "
                   f"reconstruction mse {s.reconstruction_mse:.5f} "
                   f"(relative {s.relative_error:.4f})")
    if self.num_digits > len(self.levels):
      lines.append(f"level {_letter(len(self.levels))} (collision): {self.collision_size} codes")
    return "\n".join(lines + list(self.notes))

  def save(self, path) -> None:
    """Writes codes, codebooks, statistics and config to one .npz file (`SemanticIds.load`)."""
    config = self.config if isinstance(self.config, dict) else dataclasses.asdict(self.config)
    meta = dict(method=self.method, codebook_size=self.size, config=config,
                collision_rate=self.collision_rate, items_in_collision=self.items_in_collision,
                collision_size=self.collision_size, notes=list(self.notes),
                shared_digits=self.shared_digits,
                levels=[dataclasses.asdict(s) for s in self.levels])
    arrays = {f"codebook_{i}": c for i, c in enumerate(self.codebooks)}
    with open(path, "wb") as f:
      np.savez(f, codes=self.codes, meta=np.array(json.dumps(meta, default=_jsonable)), **arrays)

  @classmethod
  def load(cls, path) -> "SemanticIds":
    """Reads a file `save` wrote; `config` comes back as a dict."""
    with np.load(path) as f:
      meta = json.loads(str(f["meta"]))
      codebooks = [f[f"codebook_{i}"] for i in range(len(f.files) - 2)]
      codes = f["codes"]
    return cls(codes=codes, codebooks=codebooks, levels=[LevelStats(**s) for s in meta["levels"]],
               collision_rate=meta["collision_rate"],
               items_in_collision=meta["items_in_collision"],
               collision_size=meta["collision_size"], config=meta["config"],
               method=meta["method"], codebook_size=meta["codebook_size"],
               notes=tuple(meta["notes"]), shared_digits=int(meta.get("shared_digits", 0)))


def _jsonable(value):
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (tuple, np.ndarray)):
    return list(value)
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def level_letter(level: int) -> str:
  """The letter of level `level` in tokens and metric names: a..z, then l26, l27, ..."""
  return _letter(level)


def _letter(level: int) -> str:
  letters = string.ascii_lowercase
  return letters[level] if level < 26 else f"l{level}"


def _perplexity(codes: np.ndarray) -> float:
  counts = np.bincount(codes)
  p = counts[counts > 0] / len(codes)
  return float(np.exp(-(p * np.log(p)).sum()))


def level_stats(assign: np.ndarray, codebook_size: int, k: int, mse: float, base: float,
                shrunk_from: int | None = None) -> LevelStats:
  """The statistics of one level's codes `assign` [items] (mse: error after this level)."""
  used = len(np.unique(assign))
  return LevelStats(k=k, used=used, utilisation=used / codebook_size,
                    perplexity=_perplexity(assign), reconstruction_mse=float(mse),
                    relative_error=float(mse) / base, shrunk_from=shrunk_from)


@dataclasses.dataclass(frozen=True)
class Collisions:
  """Codes with the collision level appended, and what the codes shared before it."""

  codes: np.ndarray  # int32 [num_items + 1, digits]; row 0 (padding) all -1
  collision_rate: float
  items_in_collision: int
  collision_size: int


def with_collision_level(code: np.ndarray, collision_level: bool = True) -> Collisions:
  """Appends to `code` [items, levels] each item's index among the items sharing its code."""
  n = len(code)
  _, group, group_sizes = np.unique(code, axis=0, return_inverse=True, return_counts=True)
  group = group.reshape(-1)
  collision_rate = 1.0 - len(group_sizes) / n
  items_in_collision = int((group_sizes[group] > 1).sum())
  collision_size = 0
  if collision_level:
    # Index of each item among the items sharing its code, in item-id order (stable sort).
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(group_sizes)[:-1]])
    rank = np.empty(n, np.int32)
    rank[order] = np.arange(n) - np.repeat(starts, group_sizes)
    code = np.concatenate([code, rank[:, None]], axis=1)
    collision_size = int(group_sizes.max())
  codes_out = np.concatenate([np.full((1, code.shape[1]), -1, np.int32), code]).astype(np.int32)
  return Collisions(codes=codes_out, collision_rate=float(collision_rate),
                    items_in_collision=items_in_collision, collision_size=collision_size)


def _means(x: np.ndarray, assign: np.ndarray, k: int) -> np.ndarray:
  """Mean of the rows of `x` assigned to each of k clusters (every cluster non-empty)."""
  sums = np.zeros((k, x.shape[1]))
  np.add.at(sums, assign, x)
  return sums / np.bincount(assign, minlength=k)[:, None]


def _balanced_kmeans(x: np.ndarray, k: int, max_iter: int, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
  """OneRec's balanced k-means: clusters in turn take their n/k nearest unassigned points."""
  from sklearn.cluster import kmeans_plusplus  # pylint: disable=g-import-not-at-top
  n = len(x)
  sizes = np.full(k, n // k)
  sizes[:n % k] += 1
  centroids, _ = kmeans_plusplus(x, k, random_state=seed)
  assign = np.full(n, -1)
  for _ in range(max_iter):
    dist = (x ** 2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids ** 2).sum(1)[None]
    new = np.full(n, -1)
    free = np.arange(n)
    for c in range(k):
      d = dist[free, c]
      take = np.argpartition(d, sizes[c] - 1)[:sizes[c]] if sizes[c] < len(free) else (
          np.arange(len(free)))
      new[free[take]] = c
      free = np.delete(free, take)
    centroids = _means(x, new, k)
    if np.array_equal(new, assign):
      break
    assign = new
  return centroids, assign


def check_embeddings(embeddings: np.ndarray, dtype=np.float32) -> np.ndarray:
  """`embeddings` as a [items, dim] array of `dtype`; ValueError naming what is wrong."""
  x = np.asarray(embeddings, dtype)
  if x.ndim != 2 or len(x) == 0:
    raise ValueError(f"embeddings must be a non-empty [items, dim] array, got shape {x.shape}")
  if not np.isfinite(x).all():
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1)) + 1
    raise ValueError(f"embeddings of item ids {bad[:10].tolist()} are not finite")
  return x


def rq_kmeans(embeddings: np.ndarray, config: RQKMeansConfig = RQKMeansConfig()
              ) -> SemanticIds:
  """Semantic IDs of items 1..n from `embeddings` [n, dim] (row i-1 is item i)."""
  from sklearn.cluster import KMeans  # pylint: disable=g-import-not-at-top
  x = check_embeddings(embeddings, np.float64)
  if config.levels < 1 or config.codebook_size < 1:
    raise ValueError(f"RQKMeansConfig needs levels >= 1 and codebook_size >= 1, got {config}")
  base = float((x ** 2).sum(axis=1).mean()) or 1.0
  residual = x.copy()
  codes, codebooks, stats = [], [], []
  for level in range(config.levels):
    distinct = len(np.unique(residual.round(12), axis=0))
    k = min(config.codebook_size, distinct)
    if k == distinct:
      # One centroid per distinct residual: exact, and k-means would warn about it.
      centroids, assign = np.unique(residual.round(12), axis=0, return_inverse=True)
      assign = assign.reshape(-1)
      centroids = _means(residual, assign, k)
    elif config.balanced:
      centroids, assign = _balanced_kmeans(residual, k, config.max_iter, config.seed + level)
    else:
      km = KMeans(n_clusters=k, init="k-means++", n_init=config.n_init,
                  max_iter=config.max_iter, random_state=config.seed + level)
      assign = km.fit_predict(residual)
      centroids = km.cluster_centers_
    residual = residual - centroids[assign]
    mse = float((residual ** 2).sum(axis=1).mean())
    codes.append(assign.astype(np.int32))
    codebooks.append(centroids.astype(np.float32))
    stats.append(level_stats(
        assign, config.codebook_size, k, mse, base,
        shrunk_from=config.codebook_size if k < config.codebook_size else None))
  collisions = with_collision_level(np.stack(codes, axis=1), config.collision_level)
  return SemanticIds(codes=collisions.codes, codebooks=codebooks, levels=stats,
                     collision_rate=collisions.collision_rate,
                     items_in_collision=collisions.items_in_collision,
                     collision_size=collisions.collision_size, config=config)


def semantic_ids_for_catalogue(catalogue, method: str = "tfidf_svd", dim: int = 256,
                               config: RQKMeansConfig = RQKMeansConfig(),
                               missing_text: str = "fallback") -> SemanticIds:
  """Embeds an `ItemCatalogue`'s texts by `method` and quantises them (one call per run)."""
  from recjax.curriculum import embeddings as emb  # pylint: disable=g-import-not-at-top
  texts = emb.item_texts(catalogue, missing_text=missing_text)
  return rq_kmeans(emb.embed_texts(texts, method=method, dim=dim, seed=config.seed), config)


def parse_token(token: str, num_digits: int | None = None) -> tuple[int, ...]:
  """`"<a_12><b_3><c_200>"` -> (12, 3, 200); raises ValueError naming the bad part."""
  parts = token.strip().removeprefix("<").removesuffix(">").split("><") if token else []
  out = []
  for l, part in enumerate(parts):
    letter, _, value = part.partition("_")
    if letter != _letter(l) or not value.isdigit():
      raise ValueError(f"bad semantic-ID token {token!r}: part {l} is {part!r}, expected "
                       f"'{_letter(l)}_<code>'")
    out.append(int(value))
  if num_digits is not None and len(out) != num_digits:
    raise ValueError(f"semantic-ID token {token!r} has {len(out)} digits, expected {num_digits}")
  return tuple(out)

