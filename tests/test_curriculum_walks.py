"""node2vec walks: transition frequencies match node2vec's probabilities; seeded; sharded."""
from __future__ import annotations

import numpy as np
import pytest

from recjax.curriculum import walks
from recjax.data.canonical import InteractionData, Sequences

# Undirected weighted edges of a small graph on items 1..5 (6 and 7 are isolated: 7 only ever
# occurs alone). Weight w is w two-item training sequences.
EDGES = {(1, 2): 1, (2, 3): 2, (2, 4): 1, (1, 3): 1, (4, 5): 3, (3, 5): 1}
NUM_ITEMS = 7


@pytest.fixture(scope="module")
def graph():
  rows = [[a, b] for (a, b), w in EDGES.items() for _ in range(w)] + [[7]]
  return walks.cooccurrence_graph(Sequences.from_lists(rows), NUM_ITEMS)


def weight(a, b):
  return EDGES.get((a, b), EDGES.get((b, a), 0))


def exact_next(t, v, p, q):
  """node2vec's P(x | previous t, current v), from the definition."""
  probs = {}
  for x in range(1, 6):
    w = weight(v, x)
    if not w:
      continue
    alpha = 1 / p if x == t else (1.0 if weight(t, x) else 1 / q)
    probs[x] = w * alpha
  total = sum(probs.values())
  return {x: v / total for x, v in probs.items()}


def test_graph_from_training_sequences(graph):
  assert graph.num_edges == len(EDGES)
  for (a, b), w in EDGES.items():
    for u, v in ((a, b), (b, a)):
      row = slice(graph.indptr[u], graph.indptr[u + 1])
      assert graph.weights[row][list(graph.indices[row]).index(v)] == w
  assert graph.degree[6] == graph.degree[7] == graph.degree[0] == 0
  wide = walks.cooccurrence_graph(Sequences.from_lists([[1, 2, 3], [3, 3]]), 3, window=2)
  assert wide.num_edges == 3  # 1-2, 2-3 and 1-3; the repeat 3, 3 is no edge


@pytest.mark.parametrize("p,q", [(0.25, 4.0), (4.0, 0.25), (1.0, 1.0)])
def test_transition_frequencies_match_node2vec(graph, p, q):
  w = walks.node2vec_walks(graph, walk_length=6, walks_per_node=4000, p=p, q=q, seed=3)
  items = w.items.astype(np.int64)
  # First step: proportional to the edge weights of the start.
  for v in range(1, 6):
    nxt = items[items[:, 0] == v, 1]
    total = sum(weight(v, x) for x in range(1, 6))
    for x in range(1, 6):
      expected = weight(v, x) / total
      assert abs(np.mean(nxt == x) - expected) < 4 * np.sqrt(expected * (1 - expected) / len(nxt)) + 1e-9
  # Every later step, from all consecutive triples.
  t, v, x = (items[:, i:i + 4].reshape(-1) for i in range(3))
  checked = 0
  for (tt, vv) in {(a, b) for a in range(1, 6) for b in range(1, 6) if weight(a, b)}:
    here = (t == tt) & (v == vv)
    n = here.sum()
    assert n > 1000
    for xx, expected in exact_next(tt, vv, p, q).items():
      got = np.mean(x[here] == xx)
      assert abs(got - expected) < 4 * np.sqrt(expected * (1 - expected) / n) + 1e-9, (
          tt, vv, xx, got, expected)
      checked += 1
    assert set(np.unique(x[here])) <= set(exact_next(tt, vv, p, q))
  assert checked > 20


def test_isolated_items_start_no_walk(graph):
  w = walks.node2vec_walks(graph, walk_length=5, walks_per_node=3)
  assert w.isolated == 2
  assert sorted(set(w.start.tolist())) == [1, 2, 3, 4, 5]
  assert not np.isin(w.items, [0, 6, 7]).any()
  assert len(w) == 5 * 3 and w.items.shape == (15, 5)
  seqs = w.as_sequences()
  assert len(seqs) == 15 and (seqs.lengths == 5).all()
  np.testing.assert_array_equal(seqs[4], w.items[4])
  item_ids = np.array(["<pad>"] + [f"i{i}" for i in range(1, NUM_ITEMS + 1)])
  like = InteractionData(name="tiny", sequences=seqs, user_ids=np.array(["u"] * 15),
                         item_ids=item_ids)
  data = w.as_interaction_data(like)
  assert data.num_items == NUM_ITEMS and data.num_users == 15 and data.name == "tiny_walks"
  assert data.user_ids[4] == f"walk_{w.start[4]}_{w.repeat[4]}"
  np.testing.assert_array_equal(data.sequences[4], w.items[4])
  # Every step follows an edge.
  a, b = w.items[:, :-1].reshape(-1), w.items[:, 1:].reshape(-1)
  assert all(weight(int(x), int(y)) for x, y in zip(a, b))


def test_deterministic_per_seed_and_shard(graph):
  kwargs = dict(walk_length=8, walks_per_node=5, p=0.5, q=2.0)
  a = walks.node2vec_walks(graph, seed=1, shard=1, num_shards=2, **kwargs)
  b = walks.node2vec_walks(graph, seed=1, shard=1, num_shards=2, **kwargs)
  np.testing.assert_array_equal(a.items, b.items)
  c = walks.node2vec_walks(graph, seed=2, shard=1, num_shards=2, **kwargs)
  np.testing.assert_array_equal(a.start, c.start)
  assert not np.array_equal(a.items, c.items)
  # chunking is not part of the result
  d = walks.node2vec_walks(graph, seed=1, shard=1, num_shards=2, chunk_size=3, **kwargs)
  np.testing.assert_array_equal(a.items, d.items)


def test_shards_partition_the_walks(graph):
  kwargs = dict(walk_length=8, walks_per_node=4, p=0.5, q=2.0, seed=7)
  whole = walks.node2vec_walks(graph, **kwargs)
  by_key = {(s, r): tuple(w) for s, r, w in zip(whole.start, whole.repeat, whole.items.tolist())}
  seen = {}
  for shard in range(3):
    part = walks.node2vec_walks(graph, shard=shard, num_shards=3, **kwargs)
    assert set(part.start.tolist()) == set([1, 2, 3, 4, 5][shard::3])
    for s, r, w in zip(part.start, part.repeat, part.items.tolist()):
      assert (s, r) not in seen
      seen[(s, r)] = tuple(w)
  assert seen == by_key


def test_bad_arguments_are_named(graph):
  with pytest.raises(ValueError, match="p and q must be > 0, got p=0"):
    walks.node2vec_walks(graph, p=0)
  with pytest.raises(ValueError, match="shard=2, num_shards=2"):
    walks.node2vec_walks(graph, shard=2, num_shards=2)
  with pytest.raises(ValueError, match="must be >= 1"):
    walks.node2vec_walks(graph, walk_length=0)
  with pytest.raises(ValueError, match=r"items must lie in 1..3, got 1..4"):
    walks.cooccurrence_graph(Sequences.from_lists([[1, 4]]), 3)


@pytest.mark.parametrize("fmt", walks.WALK_FILE_FORMATS)
def test_walk_files_read_back_through_the_registry(tmp_path, fmt):
  from recjax.data import registry, splits  # pylint: disable=g-import-not-at-top
  from recjax.curriculum import walk_split  # pylint: disable=g-import-not-at-top
  from recjax.data.synthetic import make_synthetic  # pylint: disable=g-import-not-at-top
  data = make_synthetic(num_users=80, num_items=30, num_clusters=3, seed=0)
  split = splits.make_split(data, "leave_one_out")
  # p small: walks often step back, so an item repeats within a walk (and must survive).
  made = walk_split.walks_for_split(split, walk_length=8, walks_per_node=2, p=0.25, seed=3)
  spec = made.write(tmp_path / f"walks.{fmt}", data, fmt)
  back = registry.load_dataset(spec)
  assert back.num_users == len(made)
  raw = np.asarray(data.item_ids, dtype=str)
  expected = {f"walk_{s}_{r}": list(raw[row]) for s, r, row in
              zip(made.start, made.repeat, made.items)}
  assert any(len(set(v)) < len(v) for v in expected.values())  # repeats exercised
  for u, user in enumerate(back.user_ids):
    row = back.sequences.values[back.sequences.offsets[u]:back.sequences.offsets[u + 1]]
    assert list(np.asarray(back.item_ids, dtype=str)[row]) == expected[str(user)]
  assert not list(tmp_path.glob("*.tmp"))


def test_walk_files_refuse_other_catalogues_and_formats(tmp_path, graph):
  from recjax.data.synthetic import make_synthetic  # pylint: disable=g-import-not-at-top
  made = walks.node2vec_walks(graph, walk_length=4, walks_per_node=1)
  small = make_synthetic(num_users=10, num_items=3, num_clusters=1, seed=0)
  with pytest.raises(ValueError, match="reach item 5 but synthetic has 3 items"):
    made.write(tmp_path / "w.txt", small)
  with pytest.raises(ValueError, match="walk file format 'csv'"):
    made.write(tmp_path / "w.txt", small, "csv")
  assert not list(tmp_path.iterdir())


def test_walks_command_writes_shards_that_make_the_whole(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from recjax.data import registry  # pylint: disable=g-import-not-at-top
  from tests.cli_utils import REPO, run_main_env  # pylint: disable=g-import-not-at-top
  dataset = json.dumps({"name": "synthetic", "num_users": 60, "num_items": 25, "seed": 1})
  specs = []
  for shard, shards in ((0, 1), (0, 2), (1, 2)):
    proc = subprocess.run(
        [sys.executable, "-m", "recjax.curriculum", "walks", f"--dataset={dataset}",
         f"--out={tmp_path}/w{shard}of{shards}.txt", "--walk_length=5", "--walks_per_node=2",
         f"--shard={shard}", f"--num_shards={shards}"],
        cwd=REPO, env=run_main_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    specs.append(json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("{"))))
    assert "--config.data.dataset.format=sequence" in proc.stdout
  def rows(spec):
    d = registry.load_dataset(spec)
    raw = np.asarray(d.item_ids, dtype=str)
    return {str(u): tuple(raw[d.sequences.values[d.sequences.offsets[i]:
                                                 d.sequences.offsets[i + 1]]])
            for i, u in enumerate(d.user_ids)}
  whole, half0, half1 = (rows(s) for s in specs)
  assert whole == {**half0, **half1} and not set(half0) & set(half1) and half0 and half1
