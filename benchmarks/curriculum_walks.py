"""node2vec walks/s on the item co-occurrence graph of a dataset's training split.

    RECJAX_DATA_DIR=../shared/data python benchmarks/curriculum_walks.py --dataset=amazon_games6k

Builds the leave-one-out training graph (recjax.curriculum.walks.cooccurrence_graph), then times
`node2vec_walks` for each (p, q) of --pq. Results go to docs/benchmarks.md by hand.
"""
from __future__ import annotations

import argparse
import os
import time

from recjax.curriculum import walks
from recjax.data import registry, splits


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dataset", default="amazon_games6k")
  ap.add_argument("--walk_length", type=int, default=20)
  ap.add_argument("--walks_per_node", type=int, default=10)
  ap.add_argument("--pq", default="1,1;0.25,4;4,0.25", help="';'-separated p,q pairs")
  args = ap.parse_args()
  data = registry.load_dataset({"name": args.dataset})
  split = splits.make_split(data, "leave_one_out")
  start = time.perf_counter()
  graph = walks.cooccurrence_graph(split.train, data.num_items)
  isolated = int((graph.degree[1:] == 0).sum())
  print(f"{args.dataset}: {data.num_items:,} items, {graph.num_edges:,} edges, {isolated} isolated;"
        f" graph built in {time.perf_counter() - start:.2f} s; load {os.getloadavg()[0]:.1f}")
  for pair in args.pq.split(";"):
    p, q = (float(x) for x in pair.split(","))
    start = time.perf_counter()
    out = walks.node2vec_walks(graph, walk_length=args.walk_length,
                               walks_per_node=args.walks_per_node, p=p, q=q, seed=0)
    seconds = time.perf_counter() - start
    print(f"p={p:g} q={q:g}: {len(out):,} walks x {args.walk_length} in {seconds:.2f} s = "
          f"{len(out) / seconds:,.0f} walks/s, {len(out) * args.walk_length / seconds:,.0f} steps/s")


if __name__ == "__main__":
  main()
