"""The SASRec synthetic-vs-real experiment (issue 12 §5): a grid of benchmarks/curriculum_sasrec.py runs.

    RECJAX_DATA_DIR=../shared/data python benchmarks/curriculum_sasrec_grid.py --out=DIR \
        --datasets=amazon_beauty,amazon_video,ml-1m-pos --modes=real,walks,both \
        --sweep_dataset=ml-1m-pos --p=0.25,4 --q=0.25,4 --walk_length=10,50 \
        -- --override train.num_epochs=20

Points: every dataset x mode with the default walks (p = q = 1, length 20, 10 walks per item),
then, on `--sweep_dataset`, walks-only runs changing one walk knob at a time (each value of
--p, --q, --walk_length with the others at their defaults). Each point is one
`benchmarks/curriculum_sasrec.py` run in DIR/<point> (configs/sasrec.py:DATASET plus the
overrides after `--`, the same for every point), so validation and test users, histories and
targets are the real ones in every row; a point with a results.json is skipped, so re-running
resumes. DIR/report.md: test recall@10, recall@100, NDCG@10 (full-catalogue ranking) per point
and each mode's recall@100 relative to real-only training on its dataset (the paper: +130% for
synthetic over real). Every point's full stdout is DIR/<point>/log.txt.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_WALKS = dict(p=1.0, q=1.0, walk_length=20)


def _floats(text: str) -> list[float]:
  return [float(v) for v in text.split(",") if v]


def points(args) -> list[dict]:
  """The grid, in run order: (dataset, mode) with default walks, then the one-knob sweeps."""
  out = [dict(dataset=d, mode=m, **DEFAULT_WALKS)
         for d in args.datasets.split(",") for m in args.modes.split(",")]
  if args.sweep_dataset:
    for knob, values in (("p", _floats(args.p)), ("q", _floats(args.q)),
                         ("walk_length", [int(v) for v in _floats(args.walk_length)])):
      for value in values:
        point = dict(dataset=args.sweep_dataset, mode="walks", **{**DEFAULT_WALKS, knob: value})
        if point not in out:
          out.append(point)
  return out


def name(point: dict) -> str:
  walks = "" if point["mode"] == "real" else (
      f"_p{point['p']:g}_q{point['q']:g}_len{point['walk_length']}")
  return f"{point['dataset']}_{point['mode']}{walks}"


def run_point(point: dict, workdir: pathlib.Path, overrides: list[str]) -> dict:
  """Runs one point (or reads its finished results) and returns its test figures."""
  results = workdir / "results.json"
  if not results.exists():
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(REPO / "benchmarks" / "curriculum_sasrec.py"),
           f"--dataset={point['dataset']}", f"--mode={point['mode']}", f"--workdir={workdir}",
           f"--p={point['p']}", f"--q={point['q']}", f"--walk_length={point['walk_length']}",
           *overrides]
    print("$ " + " ".join(cmd), flush=True)
    start, load = time.perf_counter(), os.getloadavg()[0]
    with open(workdir / "log.txt", "w", encoding="utf-8") as log:
      proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, check=False)
    if proc.returncode:
      print(f"  failed (exit {proc.returncode}); see {workdir / 'log.txt'}", flush=True)
      return {}
    (workdir / "timing.json").write_text(json.dumps(
        dict(seconds=time.perf_counter() - start, load_at_start=load)))
  metrics = json.loads(results.read_text())
  metrics = metrics.get("metrics", metrics)
  timing = workdir / "timing.json"
  seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else float("nan")
  return dict(seconds=seconds, **{k[len("test/"):]: v for k, v in metrics.items()
                                  if k.startswith("test/")})


def report(rows: list[tuple[dict, dict]]) -> str:
  real = {p["dataset"]: r.get("recall@100") for p, r in rows if p["mode"] == "real" and r}
  lines = ["| dataset | mode | p | q | walk length | users | recall@10 | recall@100 | ndcg@10 | "
           "recall@100 vs real | seconds |", "|" + "---|" * 11]
  for p, r in rows:
    walk = ("-", "-", "-") if p["mode"] == "real" else (f"{p['p']:g}", f"{p['q']:g}",
                                                        str(p["walk_length"]))
    if not r:
      lines.append(f"| {p['dataset']} | {p['mode']} | {' | '.join(walk)} | failed | | | | | |")
      continue
    base = real.get(p["dataset"])
    rel = (f"{100 * (r['recall@100'] / base - 1):+.0f}%" if base and p["mode"] != "real"
           else "-")
    lines.append(f"| {p['dataset']} | {p['mode']} | {' | '.join(walk)} | {int(r['users']):,} | "
                 f"{r['recall@10']:.4f} | {r['recall@100']:.4f} | {r['ndcg@10']:.4f} | {rel} | "
                 f"{r['seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def main() -> None:
  argv = sys.argv[1:]
  overrides = argv[argv.index("--") + 1:] if "--" in argv else []
  argv = argv[:argv.index("--")] if "--" in argv else argv
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", required=True, help="root of the points' workdirs and report.md")
  ap.add_argument("--datasets", default="amazon_beauty,amazon_video,ml-1m-pos")
  ap.add_argument("--modes", default="real,walks,both")
  ap.add_argument("--sweep_dataset", default="", help="dataset of the one-knob walk sweeps")
  ap.add_argument("--p", default="0.25,4", help="return parameters to sweep (comma-separated)")
  ap.add_argument("--q", default="0.25,4", help="in-out parameters to sweep")
  ap.add_argument("--walk_length", default="10,50", help="walk lengths to sweep")
  args = ap.parse_args(argv)
  out = pathlib.Path(args.out)
  rows = []
  for point in points(args):
    rows.append((point, run_point(point, out / name(point), overrides)))
    (out / "report.md").write_text(report(rows))
  print(report(rows))


if __name__ == "__main__":
  main()
