"""Inspect datasets and text corpora from the command line.

    python -m recjax.data summary --dataset=amazon_beauty [--root=DIR]
    python -m recjax.data summary --dataset='{"name": "ml-100k", "min_rating": 4}'
    python -m recjax.data summary --config=configs/sasrec.py:ml-100k [--config.data.root=DIR]
    python -m recjax.data show --config=configs/X.py [...]   # rendered prompts, entity spans, stats

`--help` after a command lists its flags.
"""
from __future__ import annotations

import ast
import json
import sys
from typing import Any

HELP_FLAGS = ("--help", "-h", "--helpfull", "-help", "--helpshort")


def parse_dataset(text: str) -> dict[str, Any]:
  """A `--dataset` value: a built-in name, or a full spec as JSON or a Python dict literal."""
  text = text.strip()
  if not text.startswith("{"):
    return {"name": text}
  try:
    spec = json.loads(text)
  except json.JSONDecodeError as json_error:
    try:
      spec = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      raise ValueError(f"--dataset={text[:80]!r} is neither a dataset name nor a spec written as "
                       f"JSON or a Python dict ({json_error})") from None
  if not isinstance(spec, dict):
    raise ValueError(f"--dataset spec must be a mapping, got {type(spec).__name__}")
  return spec


def _summary_flags(argv: list[str]):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
      "config", None, "Experiment config file (configs/*.py[:arg]); its data.dataset, data.root "
      "and data.split are used.", flag_values=fv, lock_config=False, sys_argv=argv)
  flags.DEFINE_string("dataset", "", "A built-in dataset name, or a full spec as JSON or a Python "
                      "dict (docs/data_formats.md).", flag_values=fv)
  flags.DEFINE_string("root", "", "Data root (default: the config's data.root, else "
                      "$RECJAX_DATA_DIR).", flag_values=fv)
  return fv


def summary(argv: list[str]) -> int:
  """Prints a dataset's size, what reading and preprocessing changed, and its split sizes."""
  from recjax.data import registry, splits  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  argv = ["python -m recjax.data summary"] + list(argv)
  fv = _summary_flags(argv)
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(__doc__)
    print(fv.get_help(include_special_flags=False))
    return 0
  try:
    fv(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  split_name, split_kwargs, root = "leave_one_out", {}, fv.root
  try:
    if fv.config is not None:
      if fv.dataset:
        raise ValueError("give --dataset or --config, not both")
      data_cfg = fv.config.data
      spec = data_cfg.dataset
      spec = parse_dataset(spec) if isinstance(spec, str) else spec
      root = root or data_cfg.get("root", "")
      split_name = data_cfg.get("split", split_name)
      if split_name == "temporal":
        split_kwargs = {k: data_cfg[k] for k in ("valid_fraction", "test_fraction")
                        if k in data_cfg}
    elif fv.dataset:
      spec = parse_dataset(fv.dataset)
    else:
      raise ValueError(f"give --dataset=NAME|SPEC or --config=FILE; built-in datasets: "
                       f"{registry.list_datasets()}")
    data = registry.load_dataset(spec, root or None)
    split = splits.make_split(data, split_name, **split_kwargs)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(data.summary())
  for line in data.report:
    print(f"  {line}")
  print(f"{split_name}: {len(split.train):,} training sequences "
        f"({int(split.train.lengths.sum()):,} items), {len(split.valid):,} validation and "
        f"{len(split.test):,} test users")
  return 0


def main(argv: list[str]) -> int:
  commands = {"summary": summary}
  if len(argv) >= 1 and argv[0] == "show":
    from recjax.text import show  # pylint: disable=g-import-not-at-top
    return show.main(["recjax.data show"] + argv[1:])
  if argv and argv[0] in HELP_FLAGS:
    print(__doc__)
    return 0
  if not argv or argv[0] not in commands:
    print(__doc__, file=sys.stderr)
    return 2
  return commands[argv[0]](argv[1:])


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
