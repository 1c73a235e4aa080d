"""Metrics to TensorBoard event files (tensorboardX, no TensorFlow) and `metrics.jsonl`, and
the results table `recjax.main` and `recjax.evaluate` print.

Only process 0 writes; other processes get a writer that does nothing.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from typing import TYPE_CHECKING, Mapping

import jax

if TYPE_CHECKING:
  from recjax.train.trainer import Task


class MetricsWriter:
  """Appends `{"step", "time", **metrics}` lines to metrics.jsonl and scalars to TensorBoard."""

  def __init__(self, workdir: str, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._tb = None
    self._jsonl = None
    if self.enabled:
      with warnings.catch_warnings():
        # tensorboardX imports google-cloud-storage where installed (the launch extra), whose
        # google.api_core warns about the Python version on import: nothing a run can act on.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core")
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      os.makedirs(workdir, exist_ok=True)
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in metrics.items()}
    for name, value in clean.items():
      self._tb.add_scalar(name, value, step)
    record = {"step": int(step), "time": time.time()}
    record.update({k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self.enabled:
      self._tb.close()
      self._jsonl.close()


def read_jsonl(path: str) -> list[dict]:
  """Reads a metrics.jsonl file back (for tests, notebooks and benchmarks)."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def format_table(rows: Mapping[str, Mapping[str, float]], columns: list[str]) -> str:
  """A plain-text table: one row per name (e.g. model / split), one column per metric."""
  name_width = max([len("model")] + [len(r) for r in rows])
  widths = [max(len(c), 7) for c in columns]
  lines = ["  ".join(["model".ljust(name_width)] + [c.rjust(w) for c, w in zip(columns, widths)])]
  lines.append("-" * len(lines[0]))
  for name, values in rows.items():
    cells = [f"{values[c]:.4f}".rjust(w) if c in values else "-".rjust(w)
             for c, w in zip(columns, widths)]
    lines.append("  ".join([name.ljust(name_width)] + cells))
  return "\n".join(lines)


def results_table(task: Task, results: Mapping[str, Mapping[str, float]],
                  baselines: bool = True) -> str:
  """The table `recjax.main` and `recjax.evaluate` print.

  One row "<task.name> (<split>)" per split of `results` ({split: metrics}), then, with
  `baselines`, one row per reference model of the task on each split ("Popularity (test)");
  columns are `task.table_columns`.
  """
  rows = {f"{task.name} ({split})": dict(metrics) for split, metrics in results.items()}
  if baselines:
    for split in results:
      rows.update({f"{name} ({split})": dict(metrics)
                   for name, metrics in task.baselines(split).items()})
  return format_table(rows, list(task.table_columns))


def users_line(metrics: Mapping[str, float], split: str) -> str | None:
  """'evaluated N of M users (split)' from a ranking evaluation's `users` / `users_total`."""
  users, total = metrics.get("users"), metrics.get("users_total")
  if users is None or total is None:
    return None
  return f"evaluated {int(users):,} of {int(total):,} users ({split})"
