"""A synthetic sequential dataset with learnable structure, for tests and smoke runs.

Items are split into latent clusters. A user's next cluster follows a Markov chain whose rows are
strongly peaked (cluster c is followed by its successor cluster with probability
`transition_peak`), and within a cluster items are drawn by Zipf popularity. A model that learns
item-to-item transitions therefore beats popularity by a wide margin, while popularity alone
still carries some signal. Items get titles made of their cluster's words, so text models have
text that predicts the cluster, and timestamps increase along each sequence.
"""
from __future__ import annotations

import numpy as np

from recjax.data.canonical import InteractionData, Sequences
from recjax.data.readers import TEXT_DTYPE

_ADJECTIVES = (
    "amber", "brisk", "calm", "dusky", "eager", "fuzzy", "gentle", "hollow", "icy", "jolly",
    "keen", "lucky", "misty", "noble", "odd", "plain", "quiet", "rusty", "silky", "tidy",
    "urban", "vivid", "witty", "young", "zesty", "bold", "crisp", "dry", "early", "fair",
    "grand", "humble")
_NOUNS = (
    "falcon", "harbor", "lantern", "meadow", "orchid", "pebble", "quartz", "river", "saddle",
    "thistle", "violin", "willow", "anchor", "beacon", "canyon", "dune", "ember", "fern",
    "glacier", "heron", "island", "jasper", "kettle", "lagoon", "maple", "nectar", "otter",
    "prairie", "quill", "raven", "summit", "tundra")
_KINDS = ("kit", "set", "pack", "guide", "box", "case", "lamp", "mug", "book", "game", "tool",
          "card")


def make_synthetic(num_users: int = 2000, num_items: int = 1000, num_clusters: int = 20,
                   seed: int = 0, *, min_length: int = 5, max_length: int = 40,
                   transition_peak: float = 0.8, zipf_exponent: float = 1.0,
                   name: str = "synthetic") -> InteractionData:
  """Generates a synthetic sequential dataset; the same arguments give the same data.

  Args:
    num_users: number of users (rows).
    num_items: catalogue size; item ids are 1..num_items (some tail items may never occur).
    num_clusters: latent item clusters (at most num_items and 1024).
    seed: random seed.
    min_length: shortest user sequence.
    max_length: longest user sequence.
    transition_peak: probability that cluster c is followed by its successor cluster; the rest
      is spread over all clusters by a Dirichlet draw.
    zipf_exponent: exponent s of the within-cluster popularity 1 / rank**s.
    name: dataset name.

  Returns:
    InteractionData with item text fields "title" and "category" (the cluster's name), user
    features "cluster_start" (each user's first cluster) and increasing timestamps.
  """
  if not 1 <= num_clusters <= min(num_items, len(_ADJECTIVES) * len(_NOUNS)):
    raise ValueError(f"num_clusters must be in 1..min(num_items, 1024), got {num_clusters} "
                     f"with num_items={num_items}")
  if not 1 <= min_length <= max_length:
    raise ValueError(f"need 1 <= min_length <= max_length, got {min_length}, {max_length}")
  if not 0.0 <= transition_peak <= 1.0:
    raise ValueError(f"transition_peak must be in [0, 1], got {transition_peak}")
  rng = np.random.default_rng(seed)

  # Item -> cluster, and each cluster's items in popularity order.
  cluster_of = rng.permutation(np.arange(num_items) % num_clusters)
  members = [rng.permutation(np.flatnonzero(cluster_of == c) + 1) for c in range(num_clusters)]
  by_rank = np.concatenate(members).astype(np.int32)
  block_start = np.concatenate([[0], np.cumsum([len(m) for m in members])])
  # Cluster c's popularity CDF shifted by c, so one searchsorted samples every cluster at once.
  popularity_cdf = np.concatenate([
      c + np.cumsum(w) / w.sum()
      for c, w in enumerate(1.0 / np.arange(1, len(m) + 1) ** zipf_exponent for m in members)])

  # Each cluster's peak successor: a random cycle through all clusters.
  cycle = rng.permutation(num_clusters)
  successor = np.empty(num_clusters, np.int64)
  successor[cycle] = np.roll(cycle, -1)
  transition = (1 - transition_peak) * rng.dirichlet(np.ones(num_clusters), num_clusters)
  transition[np.arange(num_clusters), successor] += transition_peak
  transition_cdf = np.cumsum(transition, axis=1) / transition.sum(1, keepdims=True)
  transition_cdf = (transition_cdf + np.arange(num_clusters)[:, None]).ravel()

  lengths = rng.integers(min_length, max_length + 1, num_users)
  clusters = np.empty((num_users, max_length), np.int64)
  clusters[:, 0] = rng.integers(0, num_clusters, num_users)
  draws = rng.random((num_users, max_length))
  for t in range(1, max_length):
    prev = clusters[:, t - 1]
    hit = np.searchsorted(transition_cdf, prev + draws[:, t], side="right") - prev * num_clusters
    clusters[:, t] = np.minimum(hit, num_clusters - 1)
  hit = np.searchsorted(popularity_cdf, clusters + rng.random(clusters.shape), side="right")
  items = by_rank[np.minimum(hit, block_start[clusters + 1] - 1)]

  keep = np.arange(max_length)[None, :] < lengths[:, None]
  values = items[keep].astype(np.int32)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  start = 1_300_000_000 + rng.integers(0, 365 * 86400, num_users)
  steps = rng.integers(60, 3 * 86400, (num_users, max_length))
  steps[:, 0] = 0
  timestamps = (start[:, None] + np.cumsum(steps, axis=1))[keep].astype(np.int64)

  words = rng.choice(len(_ADJECTIVES) * len(_NOUNS), num_clusters, replace=False)
  cluster_names = [f"{_ADJECTIVES[w // len(_NOUNS)]} {_NOUNS[w % len(_NOUNS)]}" for w in words]
  titles, categories = [""], [""]
  rank_in_cluster = np.zeros(num_items + 1, np.int64)
  rank_in_cluster[by_rank] = np.arange(num_items) - np.repeat(block_start[:-1],
                                                              np.diff(block_start))
  for item in range(1, num_items + 1):
    c = cluster_of[item - 1]
    kind = _KINDS[(item * 7 + c) % len(_KINDS)]
    titles.append(f"{cluster_names[c]} {kind} {rank_in_cluster[item] + 1}")
    categories.append(cluster_names[c])

  return InteractionData(
      name=name,
      sequences=Sequences(values=values, offsets=offsets),
      user_ids=np.array([f"u{u}" for u in range(num_users)], dtype=str),
      item_ids=np.array(["<pad>"] + [f"i{i}" for i in range(1, num_items + 1)], dtype=str),
      timestamps=timestamps,
      item_text={"title": np.array(titles, dtype=TEXT_DTYPE),
                 "category": np.array(categories, dtype=TEXT_DTYPE)},
      user_features={"cluster_start": clusters[:, 0].astype(np.int32)},
  )
