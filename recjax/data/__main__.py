"""Inspect datasets and text corpora from the command line.

    python -m recjax.data summary --dataset=amazon_beauty [--root=DIR]
    python -m recjax.data show --config=configs/X.py [...]   # rendered prompts, entity spans, stats
"""
from __future__ import annotations

import argparse
import sys


def summary(argv: list[str]) -> int:
  """Prints a dataset's size and its leave-one-out split sizes."""
  from recjax.data import registry, splits  # pylint: disable=g-import-not-at-top
  ap = argparse.ArgumentParser(prog="python -m recjax.data summary")
  ap.add_argument("--dataset", required=True, help=f"one of {registry.list_datasets()}")
  ap.add_argument("--root", default=None, help="data root (default: $RECJAX_DATA_DIR)")
  args = ap.parse_args(argv)
  try:
    data = registry.load_dataset({"name": args.dataset}, args.root)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  split = splits.leave_one_out(data)
  print(data.summary())
  print(f"leave_one_out: {len(split.train):,} training sequences "
        f"({int(split.train.lengths.sum()):,} items), {len(split.valid):,} validation and "
        f"{len(split.test):,} test users")
  return 0


def main(argv: list[str]) -> int:
  commands = {"summary": summary}
  if len(argv) >= 1 and argv[0] == "show":
    from recjax.text import show  # pylint: disable=g-import-not-at-top
    return show.main(["recjax.data show"] + argv[1:])
  if not argv or argv[0] not in commands:
    print(__doc__, file=sys.stderr)
    return 2
  return commands[argv[0]](argv[1:])


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
