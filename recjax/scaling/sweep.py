"""A scaling sweep: model sizes x data budgets, each a normal recjax workdir, then power-law fits.

Point (size s, budget b) is

    python -m recjax.main --config=BASE --workdir=ROOT/<s>_<b> \
        --config.model.overrides.<k>=<v> ... (the size's)  --config.train.num_steps=<b> OVERRIDES

run in sequence (as work units through `launch/` elsewhere: `points` lists the commands). With
`sweep.mixtures` (name -> overrides, e.g. ["--config.curriculum.rates.walks=0.0"]) the
grid is repeated per training mixture in ROOT/<mixture>/<s>_<b>, each mixture fitted on its own
and `write_comparison` puts the mixtures side by side: which training modality lowers which
held-out loss most at equal model size and tokens. Every
point after the first reads the first one's tokenizer (`text.tokenizer`, `lm.tokenizer_vocab_size
=0`), so all perplexities are over the same token ids. A point whose workdir holds results.json is
finished and skipped; an interrupted one resumes from its own checkpoint; one that fails (a
diverged run) is recorded and the sweep goes on with the others (without a tokenizer.model in the first point's workdir, a
byte or Hugging Face tokenizer, every point uses the base config's own).

From the finished points: N = the model's parameter count (`num_params` in results.json, every
parameter), D = training tokens (steps x train.batch_size x text.seq_len), C = 6ND (training
FLOPs, the usual estimate), the training and evaluation wall seconds, and per held-out corpus
its test loss (mean nll per token, `test/<corpus>/loss`). Fits (recjax.scaling.fit): L(D) per
size and corpus, L(N, D) per corpus. `write_report` writes report.md (points, fits with standard
errors and R^2) and PNG plots (loss vs tokens per size with the fitted curves; loss vs
parameters at each budget).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from recjax.scaling import fit as fit_lib


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of the sweep."""

  size: str
  steps: int
  workdir: str
  command: tuple[str, ...]
  tokenizer_args: tuple[str, ...] = ()  # reading the first point's tokenizer (all but it)
  mixture: str = ""  # the name in sweep.mixtures; "" without mixtures


def mixtures(sweep: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
  """(name, its overrides of every point) of each training mixture; [("", [])] without any."""
  named = dict(sweep.get("mixtures", None) or {})
  for name in named:
    if not name or os.sep in name or name.startswith("."):
      raise ValueError(f"sweep.mixtures: {name!r} cannot name a directory")
  first = sweep.get("tokenizer_mixture", "") or next(iter(named), "")
  if named and first not in named:
    raise ValueError(f"sweep.tokenizer_mixture={first!r} is not one of sweep.mixtures "
                     f"({', '.join(named)})")
  # The mixture whose first point trains the shared tokenizer runs first.
  order = [first] + [name for name in named if name != first] if named else []
  return [(name, list(named[name])) for name in order] or [("", [])]


def points(sweep: Mapping[str, Any], root: str) -> list[Point]:
  """Every (mixture, size, budget) run of `sweep` (configs/scaling.py), the first one first."""
  sizes = dict(sweep["sizes"])
  if not sizes or not list(sweep["steps"]):
    raise ValueError("the sweep needs at least one size (sweep.sizes) and one budget "
                     "(sweep.steps)")
  out, first = [], None
  for mixture, mixture_overrides in mixtures(sweep):
    for size, overrides in sizes.items():
      for steps in sweep["steps"]:
        steps = int(steps)
        if steps < 1:
          raise ValueError(f"sweep.steps: {steps} is not a number of training steps >= 1")
        workdir = os.path.join(root, mixture, f"{size}_{steps}")
        cmd = [sys.executable, "-m", "recjax.main", f"--config={sweep['base']}",
               f"--workdir={workdir}", f"--config.train.num_steps={steps}",
               "--config.train.progress_bar=False"]
        cmd += [f"--config.model.overrides.{k}={v}" for k, v in dict(overrides).items()]
        cmd += list(sweep.get("overrides", ()))
        cmd += mixture_overrides
        shared = ()
        if first is None:
          first = workdir
        else:
          shared = (f"--config.text.tokenizer={os.path.join(first, 'tokenizer.model')}",
                    "--config.lm.tokenizer_vocab_size=0")
        out.append(Point(size, steps, workdir, tuple(cmd), shared, mixture))
  return out


def run(sweep: Mapping[str, Any], root: str, dry_run: bool = False) -> list[str]:
  """Runs the unfinished points in order; returns the workdirs of those that failed."""
  failed = []
  grid = points(sweep, root)
  shared = os.path.join(grid[0].workdir, "tokenizer.model")
  for k, point in enumerate(grid):
    header = f"[{k + 1}] {point.mixture + ', ' if point.mixture else ''}{point.size}, " \
             f"{point.steps} steps"
    if os.path.exists(os.path.join(point.workdir, "results.json")):
      print(f"{header}: finished, skipped", flush=True)
      continue
    cmd = list(point.command)
    if dry_run or os.path.exists(shared):  # else the base trains no tokenizer (byte, HF)
      cmd += point.tokenizer_args
    print(f"{header}: $ {' '.join(cmd)}", flush=True)
    if dry_run:
      continue
    code = subprocess.call(cmd)
    if code:
      print(f"{header}: failed (exit {code}); the sweep goes on", flush=True)
      failed.append(point.workdir)
      if k == 0 and not os.path.exists(os.path.join(point.workdir, "tokenizer.model")):
        raise RuntimeError(f"the first point ({point.workdir}) failed before training the "
                           "sweep's tokenizer; fix it and run the sweep again")
  return failed


def collect(sweep: Mapping[str, Any], root: str) -> list[dict[str, Any]]:
  """One row per finished point: size, steps, N, D and the test loss of every corpus."""
  rows = []
  for point in points(sweep, root):
    path = os.path.join(point.workdir, "results.json")
    if not os.path.exists(path):
      continue
    with open(path, encoding="utf-8") as f:
      results = json.load(f)
    with open(os.path.join(point.workdir, "config.json"), encoding="utf-8") as f:
      config = json.load(f)
    tokens = point.steps * int(config["train"]["batch_size"]) * int(config["text"]["seq_len"])
    losses = {k[len("test/"):-len("/loss")]: float(v) for k, v in results.items()
              if k.startswith("test/") and k.endswith("/loss") and "target" not in k}
    num_params = int(results["num_params"])
    train_s, eval_s = _seconds(point.workdir)
    rows.append(dict(size=point.size, steps=point.steps, N=num_params, D=tokens,
                     C=6 * num_params * tokens, train_s=train_s, eval_s=eval_s, losses=losses,
                     workdir=point.workdir, mixture=point.mixture))
  return rows


def _seconds(workdir: str) -> tuple[float, float]:
  """(training, evaluation) wall seconds of a finished point, from its metrics.jsonl: each logged
  window's steps over its train/steps_per_sec (compilation included), and every eval_seconds."""
  train_s = eval_s = 0.0
  last_step = 0
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return math.nan, math.nan
  with open(path, encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      rate = record.get("train/steps_per_sec")
      if rate:
        train_s += max(record["step"] - last_step, 0) / rate
        last_step = record["step"]
      eval_s += sum(v for k, v in record.items() if k.endswith("/eval_seconds"))
  return train_s, eval_s


def fit_rows(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
  """corpus -> {"data": {size: PowerLawFit | str}, "joint": PowerLawFit | str} (a str says why a
  fit could not be made: too few points)."""
  corpora = sorted({c for r in rows for c in r["losses"]})
  out = {}
  for corpus in corpora:
    have = [r for r in rows if corpus in r["losses"]]
    per_size = {}
    for size in dict.fromkeys(r["size"] for r in have):
      pts = [r for r in have if r["size"] == size]
      per_size[size] = _try(fit_lib.fit_data_law, [r["D"] for r in pts],
                            [r["losses"][corpus] for r in pts])
    joint = _try(fit_lib.fit_joint_law, [r["N"] for r in have], [r["D"] for r in have],
                 [r["losses"][corpus] for r in have])
    out[corpus] = {"data": per_size, "joint": joint}
  return out


def _try(fn, *args):
  try:
    return fn(*args)
  except (ValueError, RuntimeError) as e:  # too few finite points, or no convergence
    return f"no fit: {e}"


def write_report(root: str, rows: Sequence[Mapping[str, Any]],
                 fits: Mapping[str, Mapping[str, Any]], failed: Sequence[str] = ()) -> str:
  """Writes ROOT/report.md and ROOT/plots/*.png; returns the report's text."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  plots = os.path.join(root, "plots")
  os.makedirs(plots, exist_ok=True)
  lines = ["# Scaling sweep", "", f"{len(rows)} finished points in `{root}`" +
           (f"; {len(failed)} failed: {', '.join(failed)}" if failed else "") + ".", "",
           "C = 6ND is the usual estimate of training FLOPs (N counts every parameter, "
           "embeddings included); train s and eval s are wall seconds from each point's "
           "metrics.jsonl (compilation included).", "",
           "| size | N (parameters) | steps | D (tokens) | C (FLOPs) | train s | eval s | " +
           " | ".join(fits) + " |", "|---|---|---|---|---|---|---|" + "---|" * len(fits)]
  for r in rows:
    cells = [f"{r['losses'][c]:.4f}" if c in r["losses"] else "-" for c in fits]
    lines.append(f"| {r['size']} | {r['N']:,} | {r['steps']} | {r['D']:,} | "
                 f"{6 * r['N'] * r['D']:.3g} | {r.get('train_s', math.nan):.0f} | "
                 f"{r.get('eval_s', math.nan):.0f} | " + " | ".join(cells) + " |")
  lines += ["", f"Total: {sum(r.get('train_s', math.nan) for r in rows) / 60:.1f} min of "
            f"training, {sum(r.get('eval_s', math.nan) for r in rows) / 60:.1f} min of "
            f"evaluation, {sum(6 * r['N'] * r['D'] for r in rows):.3g} FLOPs."]
  for corpus, fit in fits.items():
    slug = corpus.replace("/", "_")
    lines += ["", f"## {corpus}", "", f"Joint {fit_lib.JOINT_LAW}: {_describe(fit['joint'])}", ""]
    lines += [f"- {size}: {fit_lib.DATA_LAW}: {_describe(f)}" for size, f in fit["data"].items()]
    fig, (ax_d, ax_n) = plt.subplots(1, 2, figsize=(11, 4))
    for size, f in fit["data"].items():
      pts = [r for r in rows if r["size"] == size and corpus in r["losses"]]
      d = np.array([r["D"] for r in pts], np.float64)
      line, = ax_d.plot(d, [r["losses"][corpus] for r in pts], "o", label=size)
      if not isinstance(f, str) and len(d) > 1:
        grid = np.geomspace(d.min(), d.max(), 50)
        ax_d.plot(grid, f.predict(grid), "-", color=line.get_color())
    ax_d.set(xscale="log", xlabel="training tokens D", ylabel="held-out loss (nats/token)",
             title=f"{corpus}: loss vs tokens")
    ax_d.legend()
    for steps in sorted({r["steps"] for r in rows}):
      pts = sorted((r for r in rows if r["steps"] == steps and corpus in r["losses"]),
                   key=lambda r: r["N"])
      ax_n.plot([r["N"] for r in pts], [r["losses"][corpus] for r in pts], "o-",
                label=f"{steps} steps")
    ax_n.set(xscale="log", xlabel="parameters N", ylabel="held-out loss (nats/token)",
             title=f"{corpus}: loss vs parameters")
    ax_n.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(plots, f"{slug}.png"), dpi=100)
    plt.close(fig)
    lines += ["", f"![{corpus}](plots/{slug}.png)"]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(root, "report.md"), "w", encoding="utf-8") as f:
    f.write(text)
  return text


def write_comparison(root: str, rows: Sequence[Mapping[str, Any]],
                     fits: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
  """ROOT/report.md comparing the mixtures; `fits` is mixture -> `fit_rows` of its rows.

  Per held-out corpus: the test loss of every mixture at each (size, budget) that all of them
  finished, the mixtures ranked at the largest such point, and each mixture's joint-law fit
  (its per-mixture report, ROOT/<mixture>/report.md, has the plots).
  """
  names = list(fits)
  corpora = sorted({c for r in rows for c in r["losses"]})
  by_point = {}
  for r in rows:
    by_point.setdefault((r["size"], r["steps"]), {})[r["mixture"]] = r
  common = [key for key, got in by_point.items() if set(got) == set(names)]
  lines = ["# Scaling sweep: training mixtures compared", "",
           f"{len(rows)} finished points in `{root}`, mixtures " +
           ", ".join(f"[{m}]({m}/report.md)" for m in names) + ". Lower held-out loss "
           "(nats/token) at equal size and tokens = the more useful training mixture for "
           "that corpus.", ""]
  for corpus in corpora:
    lines += [f"## {corpus}", "", "| size | steps | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for size, steps in common:
      got = by_point[size, steps]
      lines.append(f"| {size} | {steps} | " + " | ".join(
          f"{got[m]['losses'][corpus]:.4f}" if corpus in got[m]["losses"] else "-"
          for m in names) + " |")
    if common:
      largest = max(common, key=lambda key: (by_point[key][names[0]]["N"], key[1]))
      got = by_point[largest]
      ranked = sorted((m for m in names if corpus in got[m]["losses"]),
                      key=lambda m: got[m]["losses"][corpus])
      lines += ["", f"Ranked at {largest[0]}, {largest[1]} steps: " + " < ".join(
          f"{m} ({got[m]['losses'][corpus]:.4f})" for m in ranked)]
    lines += [""] + [f"- {m}: joint {fit_lib.JOINT_LAW}: "
                     f"{_describe(fits[m].get(corpus, {}).get('joint', 'not evaluated'))}"
                     for m in names] + [""]
  text = "\n".join(lines)
  with open(os.path.join(root, "report.md"), "w", encoding="utf-8") as f:
    f.write(text)
  return text


def _describe(fit) -> str:
  if isinstance(fit, str):
    return fit
  params = ", ".join(f"{k} = {v:.4g} ± {fit.stderr[k]:.2g}" if math.isfinite(fit.stderr[k])
                     else f"{k} = {v:.4g}" for k, v in fit.params.items())
  return f"{params}; R^2 = {fit.r2:.4f} over {fit.num_points} points"
