"""Layer 2 synthetic user histories: node2vec walks on the training item co-occurrence graph.

The graph (`cooccurrence_graph`) is undirected: items a != b are joined when they occur at most
`window` positions apart in a training sequence, weighted by how often they do. A walk starts at
an item and moves to a neighbour x of the current item v, having come from t, with probability
proportional to w(v, x) * alpha(t, x), where alpha is 1/p when x == t (return), 1 when x is a
neighbour of t, and 1/q otherwise (in-out); the first step is proportional to w(v, x) alone.
This is node2vec's second-order walk (Grover & Leskovec 2016), sampled exactly by rejection
for all walkers at once in numpy. The return edge is drawn with its exact weight w(v, t) / p; any
other neighbour is proposed from w(v, .) without t and accepted with alpha(t, x) / max(1, 1/q),
so the acceptance rate is at least min(1, q) / max(1, q) whatever p is (p = q = 1: no rejection).

Determinism and sharding: every random number is a hash of (seed, walk, step, attempt), and a
walk is named by (start item, repeat), so a walk is the same whichever shard makes it. Shard s of
n starts only at items start_items[s::n]; the shards together make exactly the unsharded walks.

Isolated items (no neighbour in the training graph, e.g. items only in evaluation targets or only
in one-item sequences) start no walk; `Walks.isolated` counts them.

PecanPy (SparseOTF) is no dependency: pecanpy 2.0.9 pins numpy < 2 (via nptyping/numba), and on
amazon_games6k it made 2-13x fewer walks/s than this (docs/curriculum.md).
"""
from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from recjax.data.canonical import InteractionData, Sequences


@dataclasses.dataclass(frozen=True)
class Graph:
  """Undirected weighted item graph in CSR form over nodes 0..num_items (0 = padding, isolated)."""

  indptr: np.ndarray  # int64 [num_items + 2]
  indices: np.ndarray  # int32 [edges]: neighbours, sorted within each row
  weights: np.ndarray  # float64 [edges]
  num_items: int

  @property
  def degree(self) -> np.ndarray:
    return np.diff(self.indptr)

  @property
  def num_edges(self) -> int:
    """Undirected edges (each stored twice)."""
    return len(self.indices) // 2


def cooccurrence_graph(train: Sequences, num_items: int, window: int = 1) -> Graph:
  """The item graph of the training sequences: a -- b when at most `window` apart."""
  if window < 1:
    raise ValueError(f"graph window must be >= 1, got {window}")
  values = train.values.astype(np.int64)
  if len(values) and (values.min() < 1 or values.max() > num_items):
    raise ValueError(f"training items must lie in 1..{num_items}, got "
                     f"{values.min()}..{values.max()}")
  row = np.repeat(np.arange(len(train), dtype=np.int64), train.lengths)
  base = num_items + 1
  keys = []
  for d in range(1, window + 1):
    if len(values) <= d:
      break
    same = (row[d:] == row[:-d]) & (values[d:] != values[:-d])
    a, b = values[:-d][same], values[d:][same]
    keys += [a * base + b, b * base + a]
  keys, counts = (np.unique(np.concatenate(keys), return_counts=True) if keys
                  else (np.zeros(0, np.int64), np.zeros(0, np.int64)))
  src = keys // base
  indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=base))]).astype(np.int64)
  return Graph(indptr=indptr, indices=(keys % base).astype(np.int32),
               weights=counts.astype(np.float64), num_items=num_items)


@dataclasses.dataclass(frozen=True)
class Walks:
  """Walks of one shard: row i starts at `start[i]`, the `repeat[i]`-th walk from it."""

  items: np.ndarray  # int32 [walks, walk_length]: item ids 1..num_items
  start: np.ndarray  # int32 [walks]
  repeat: np.ndarray  # int32 [walks]
  isolated: int  # catalogue items with no neighbour (they start no walk, in any shard)

  def __len__(self) -> int:
    return len(self.items)

  def as_sequences(self) -> Sequences:
    """The walks as SASRec-trainable item sequences (one row per walk)."""
    n, length = self.items.shape
    return Sequences(values=self.items.reshape(-1).astype(np.int32),
                     offsets=np.arange(0, n * length + 1, length, dtype=np.int64))

  def as_interaction_data(self, like: InteractionData, name: str | None = None
                          ) -> InteractionData:
    """The walks as a dataset over `like`'s catalogue (same item ids and item text): one user
    "walk_<start>_<repeat>" per walk, no timestamps; what SASRec trains on."""
    users = np.array([f"walk_{s}_{r}" for s, r in zip(self.start, self.repeat)])
    return InteractionData(name=name or f"{like.name}_walks", sequences=self.as_sequences(),
                           user_ids=users, item_ids=like.item_ids, item_text=like.item_text,
                           report=[f"{len(self):,} node2vec walks of {self.items.shape[1]} items "
                                   f"over the catalogue of {like.name}; {self.isolated:,} "
                                   "isolated items start none"])


  def write(self, path: str | os.PathLike, like: InteractionData, fmt: str = "sequence"
            ) -> dict:
    """Writes the walks as a dataset file over `like`'s raw item ids and returns the registry
    spec that reads it back (`recjax.data.registry.load_dataset`).

    fmt: `sequence` (`walk_<start>_<repeat> item item ...` per line, the Beauty.txt layout) or
    `atomic` (a RecBole `.inter` table, `user_id:token item_id:token timestamp:float`, the
    position in the walk as timestamp). The file is written to a temporary name and renamed,
    so an interrupted write leaves no partial file.
    """
    if fmt not in WALK_FILE_FORMATS:
      raise ValueError(f"walk file format {fmt!r}: choose from {list(WALK_FILE_FORMATS)}")
    if self.items.size and self.items.max() > like.num_items:
      raise ValueError(f"walks reach item {int(self.items.max())} but {like.name} has "
                       f"{like.num_items} items: they were made for another catalogue")
    raw = np.asarray(like.item_ids, dtype=str)
    spaced = [r for r in raw[np.unique(self.items)] if not r or any(c.isspace() for c in r)]
    if spaced:
      raise ValueError(f"item id {spaced[0]!r} of {like.name} is empty or has whitespace: it "
                       "cannot be written as one field")
    users = [f"walk_{s}_{r}" for s, r in zip(self.start, self.repeat)]
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      if fmt == "sequence":
        for user, row in zip(users, raw[self.items]):
          f.write(f"{user} {' '.join(row)}\n")
      else:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, row in zip(users, raw[self.items]):
          f.writelines(f"{user}\t{item}\t{t}\n" for t, item in enumerate(row))
    os.replace(tmp, path)
    return {"name": f"{like.name}_walks", "format": fmt, "dir": str(path.parent),
            "files": {WALK_FILE_FORMATS[fmt]: path.name}}


# Walk file format -> the registry format's file role (recjax.data.registry.FORMATS).
WALK_FILE_FORMATS = {"sequence": "sequences", "atomic": "inter"}
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
  z = z + _GOLDEN
  z = (z ^ (z >> np.uint64(30))) * _M1
  z = (z ^ (z >> np.uint64(27))) * _M2
  return z ^ (z >> np.uint64(31))


def _uniform(seed: int, walk: np.ndarray, step: int, attempt: int, stream: int) -> np.ndarray:
  """float64 in [0, 1), a pure function of (seed, walk, step, attempt, stream)."""
  counter = np.uint64((step << 24) | (attempt << 2) | stream)
  z = _mix(_mix(np.full(walk.shape, seed, np.uint64)) ^ walk.astype(np.uint64))
  z = _mix(z ^ counter)
  return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def node2vec_walks(graph: Graph, walk_length: int = 20, walks_per_node: int = 10,
                   p: float = 1.0, q: float = 1.0, seed: int = 0, shard: int = 0,
                   num_shards: int = 1, weighted: bool = True, chunk_size: int = 65536,
                   max_attempts: int = 10_000) -> Walks:
  """node2vec walks of shard `shard` of `num_shards` (see module docstring).

  Args:
    graph: the training co-occurrence graph (`cooccurrence_graph`).
    walk_length: items per walk, the start included (node2vec's default 80; 20 suits
      recommendation histories, whose mean length is 7-95 here).
    walks_per_node: walks from each non-isolated item (node2vec: 10).
    p: return parameter; small p revisits the previous item (1.0: no bias).
    q: in-out parameter; q > 1 stays near the previous item (BFS-like), q < 1 moves away
      (DFS-like) (1.0: no bias).
    seed: random seed; with (start, repeat) it fixes a walk.
    shard, num_shards: this shard generates the walks of start items start_items[shard::n].
    weighted: step in proportion to co-occurrence counts (True) or uniformly over neighbours.
    chunk_size: walkers advanced together (bounds memory, not results).
    max_attempts: rejection rounds per step before giving up (only tiny alpha ratios need many).
  """
  if walk_length < 1 or walks_per_node < 1:
    raise ValueError(f"walk_length and walks_per_node must be >= 1, got {walk_length}, "
                     f"{walks_per_node}")
  if not (p > 0 and q > 0):
    raise ValueError(f"node2vec p and q must be > 0, got p={p}, q={q}")
  if not 0 <= shard < num_shards:
    raise ValueError(f"shard must lie in 0..num_shards-1, got shard={shard}, "
                     f"num_shards={num_shards}")
  degree = graph.degree
  nodes = np.flatnonzero(degree[1:] > 0).astype(np.int64) + 1
  isolated = graph.num_items - len(nodes)
  mine = nodes[shard::num_shards]
  start = np.tile(mine, walks_per_node)
  repeat = np.repeat(np.arange(walks_per_node, dtype=np.int64), len(mine))
  weights = graph.weights if weighted else np.ones_like(graph.weights)
  cum = np.concatenate([[0.0], np.cumsum(weights)])
  # Row r's edges are keys [indptr[r], indptr[r+1]) of the globally sorted r * base + neighbour.
  base = np.int64(graph.num_items + 1)
  src = np.repeat(np.arange(graph.num_items + 1, dtype=np.int64), degree)
  keys = src * base + graph.indices
  other_max = max(1.0, 1.0 / q)  # envelope of alpha over neighbours other than t
  out = np.zeros((len(start), walk_length), np.int32)
  for lo in range(0, len(start), chunk_size):
    s, r = start[lo:lo + chunk_size], repeat[lo:lo + chunk_size]
    walk_id = r * base + s
    out[lo:lo + len(s)] = _walk_chunk(graph, cum, keys, base, s, walk_id, walk_length, p, q,
                                      other_max, seed, max_attempts)
  return Walks(items=out, start=start.astype(np.int32), repeat=repeat.astype(np.int32),
               isolated=int(isolated))


def _propose(graph: Graph, cum: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
  lo, hi = graph.indptr[v], graph.indptr[v + 1]
  target = cum[lo] + u * (cum[hi] - cum[lo])
  edge = np.clip(np.searchsorted(cum, target, side="right") - 1, lo, hi - 1)
  return graph.indices[edge].astype(np.int64)


def _walk_chunk(graph, cum, keys, base, start, walk_id, walk_length, p, q, other_max, seed,
                max_attempts):
  walks = np.zeros((len(start), walk_length), np.int64)
  walks[:, 0] = start
  if walk_length > 1:
    walks[:, 1] = _propose(graph, cum, start, _uniform(seed, walk_id, 1, 0, 0))
  first_order = p == 1.0 and q == 1.0
  for step in range(2, walk_length):
    prev, cur = walks[:, step - 2], walks[:, step - 1]
    if first_order:
      walks[:, step] = _propose(graph, cum, cur, _uniform(seed, walk_id, step, 0, 0))
      continue
    # The edge v -> t (it exists: the walk came along it) and the envelope masses.
    back = np.searchsorted(keys, cur * base + prev)
    w_back = cum[back + 1] - cum[back]
    lo, hi = graph.indptr[cur], graph.indptr[cur + 1]
    w_other = cum[hi] - cum[lo] - w_back
    mass_return = w_back / p
    mass_other = w_other * other_max
    pending = np.arange(len(start))
    for attempt in range(max_attempts):
      ids, t = walk_id[pending], prev[pending]
      u_part = _uniform(seed, ids, step, attempt, 0)
      u_pick = _uniform(seed, ids, step, attempt, 1)
      u_accept = _uniform(seed, ids, step, attempt, 2)
      is_return = u_part * (mass_return[pending] + mass_other[pending]) < mass_return[pending]
      # A neighbour other than t: a point of v's weight range with t's interval cut out.
      target = cum[lo[pending]] + u_pick * w_other[pending]
      b = back[pending]
      target = np.where(target >= cum[b], target + w_back[pending], target)
      edge = np.clip(np.searchsorted(cum, target, side="right") - 1, lo[pending],
                     hi[pending] - 1)
      x = np.where(is_return, t, graph.indices[edge].astype(np.int64))
      key = t * base + x
      pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
      alpha = np.where(keys[pos] == key, 1.0, 1.0 / q)
      accept = is_return | ((u_accept * other_max < alpha) & (x != t))
      walks[pending[accept], step] = x[accept]
      pending = pending[~accept]
      if not len(pending):
        break
    else:
      raise RuntimeError(f"node2vec: {len(pending)} walkers rejected {max_attempts} times at "
                         f"step {step} (p={p}, q={q}); use less extreme p and q")
  return walks.astype(np.int32)
