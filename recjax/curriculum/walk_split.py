"""node2vec walks as SASRec training data: a split whose training sequences are walks.

`walk_split(split, walks, mode)` keeps the evaluation sets of a real split (the same users,
histories and targets) and replaces its training sequences by walks (`mode="walks"`), appends
the walks to them (`"both"`), or keeps them (`"real"`, the baseline). The walks must come from
the graph of `split.train` (`walks_for_split`), so no validation or test target enters training
either way. Walk rows have user -1 in `Split.train_users` (no real user). SASRec trains on
`split.train` only, so `recjax.tasks.sasrec.SASRecTask(config, data, walk_split(...))` trains on
walks and evaluates on the real users (benchmarks/curriculum_sasrec.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from recjax.curriculum import walks as walks_lib
from recjax.data.canonical import Sequences
from recjax.data.splits import Split

MODES = ("real", "walks", "both")


def walks_for_split(split: Split, graph_window: int = 1, **walk_kwargs) -> walks_lib.Walks:
  """node2vec walks on the co-occurrence graph of `split.train` (`walks.node2vec_walks` knobs:
  walk_length, walks_per_node, p, q, seed, shard, num_shards, weighted)."""
  graph = walks_lib.cooccurrence_graph(split.train, split.num_items, graph_window)
  if graph.num_edges == 0:
    raise ValueError("the training co-occurrence graph has no edge: no walk can be made")
  return walks_lib.node2vec_walks(graph, **walk_kwargs)


def walk_split(split: Split, walks: walks_lib.Walks | Sequences, mode: str = "walks") -> Split:
  """`split` with training sequences by `mode` (MODES); evaluation sets unchanged."""
  if mode not in MODES:
    raise ValueError(f"walk mode {mode!r}: choose from {MODES}")
  if mode == "real":
    return split
  seqs = walks.as_sequences() if isinstance(walks, walks_lib.Walks) else walks
  if len(seqs.values) and (seqs.values.min() < 1 or seqs.values.max() > split.num_items):
    raise ValueError(f"walk items must lie in 1..{split.num_items}")
  walk_users = np.full(len(seqs), -1, np.int32)
  if mode == "walks":
    return dataclasses.replace(split, train=seqs, train_users=walk_users)
  train = Sequences(values=np.concatenate([split.train.values, seqs.values]).astype(np.int32),
                    offsets=np.concatenate([split.train.offsets,
                                            split.train.offsets[-1] + seqs.offsets[1:]]
                                           ).astype(np.int64))
  return dataclasses.replace(split, train=train,
                             train_users=np.concatenate([split.train_users, walk_users]))
