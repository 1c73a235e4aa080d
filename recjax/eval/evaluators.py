"""Evaluators chosen by name in `config.eval.evaluators`, each with its own cadence.

An evaluator (the `Evaluator` protocol of `recjax.train.trainer`) is a callable object
`(model, split, mesh) -> {metric: float}` with a `name` and `every_steps` (run every that many
training steps; 0 = every `train.eval_every_steps`). The trainer runs those due at a step and
merges their metrics, so two evaluators of one task never return the same key.

`config.eval.evaluators` is a comma list of `name` or `name@N`, e.g. "ranking" or
"ranking,retrieval@1000"; each task maps the names it knows to factories in its `EVALUATORS`
table and calls `build_evaluators`. A new evaluator: a class in its own module of `recjax/eval/`
(copy `ranking.py`), a factory in the task's table, a line in the task's eval config comment.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

CONFIG_KEY = "config.eval.evaluators"


def parse_spec(spec: str) -> list[tuple[str, int]]:
  """'ranking,perplexity@500' -> [("ranking", 0), ("perplexity", 500)]."""
  out = []
  for entry in (e.strip() for e in str(spec).split(",")):
    if not entry:
      continue
    name, _, every = entry.partition("@")
    name = name.strip()
    try:
      steps = int(every) if every.strip() else 0
    except ValueError:
      steps = -1
    if not name or steps < 0 or (every and steps == 0):
      raise ValueError(f"{CONFIG_KEY}: {entry!r} is not 'name' or 'name@N' with N >= 1 "
                       "training steps")
    if name in [n for n, _ in out]:
      raise ValueError(f"{CONFIG_KEY}: {name!r} is listed twice")
    out.append((name, steps))
  if not out:
    raise ValueError(f"{CONFIG_KEY} is empty; give a comma list of evaluator names")
  return out


def build_evaluators(spec: str, factories: Mapping[str, Callable[[int], Any]]) -> list[Any]:
  """The evaluators `spec` names, built by `factories[name](every_steps)`, in spec order.

  Raises:
    ValueError: a name the task does not know (the valid names are listed) or a bad `@N`.
  """
  evaluators = []
  for name, every in parse_spec(spec):
    if name not in factories:
      raise ValueError(f"{CONFIG_KEY}: unknown evaluator {name!r}; valid names for this task: "
                       f"{', '.join(sorted(factories))}")
    evaluators.append(factories[name](every))
  return evaluators
