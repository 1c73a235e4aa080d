"""Curriculum data from the command line.

    python -m recjax.curriculum walks --dataset=amazon_games6k --out=/tmp/games_walks.inter \
        --format=atomic [--p=1 --q=1 --walk_length=20 --walks_per_node=10 --seed=0] \
        [--shard=0 --num_shards=1] [--root=DIR]

`walks` makes node2vec walks on the co-occurrence graph of the dataset's leave-one-out training
sequences (no validation or test target enters the graph) and writes them over the dataset's raw
item ids, as `sequence` lines (`walk_<start>_<repeat> item item ...`) or a RecBole atomic
`.inter` table; it prints the registry spec that reads the file back, so any recjax config (or
RecBole) can train on the walks. `--shard/--num_shards` writes one shard of the walks (a host's
share on a pod; the shards together are exactly the unsharded walks).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def walks_command(argv: list[str]) -> int:
  from recjax.curriculum import walk_split, walks  # pylint: disable=g-import-not-at-top
  from recjax.data import registry, splits  # pylint: disable=g-import-not-at-top
  from recjax.data.__main__ import parse_dataset  # pylint: disable=g-import-not-at-top
  ap = argparse.ArgumentParser(prog="python -m recjax.curriculum walks",
                               description="node2vec walks of a dataset's training graph to a file")
  ap.add_argument("--dataset", required=True, help="a built-in name or a full spec (JSON)")
  ap.add_argument("--out", required=True, help="file to write")
  ap.add_argument("--format", default="sequence", choices=walks.WALK_FILE_FORMATS)
  ap.add_argument("--root", default=None, help="data root (default: $RECJAX_DATA_DIR)")
  ap.add_argument("--split", default="leave_one_out", help="whose training part makes the graph")
  ap.add_argument("--graph_window", type=int, default=1, help="co-occurrence window (positions)")
  ap.add_argument("--walk_length", type=int, default=20)
  ap.add_argument("--walks_per_node", type=int, default=10)
  ap.add_argument("--p", type=float, default=1.0, help="return parameter")
  ap.add_argument("--q", type=float, default=1.0, help="in-out parameter")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--shard", type=int, default=0)
  ap.add_argument("--num_shards", type=int, default=1)
  args = ap.parse_args(argv)
  data = registry.load_dataset(parse_dataset(args.dataset), args.root)
  split = splits.make_split(data, args.split)
  start = time.perf_counter()
  made = walk_split.walks_for_split(split, args.graph_window, walk_length=args.walk_length,
                                    walks_per_node=args.walks_per_node, p=args.p, q=args.q,
                                    seed=args.seed, shard=args.shard, num_shards=args.num_shards)
  spec = made.write(args.out, data, args.format)
  print(f"{len(made):,} walks of {args.walk_length} items ({made.isolated:,} isolated items start "
        f"none) from the {args.split} training graph of {data.name}, written to {args.out} in "
        f"{time.perf_counter() - start:.1f} s; read it back with the dataset spec:")
  print(json.dumps(spec))
  flags = [f"--config.data.dataset.{k}={v}" for k, v in spec.items() if k != "files"]
  print("or, in a config of another dataset, the overrides: " + " ".join(
      flags + [f"--config.data.dataset.files=\"{spec['files']!r}\""]))
  return 0


COMMANDS = {"walks": walks_command}


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in COMMANDS:
    print(__doc__)
    return 0 if argv and argv[0] in ("-h", "--help") else 2
  return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
  sys.exit(main())
