"""`python -m recjax.scaling --config=configs/scaling.py[:NAME] --workdir=ROOT`: a scaling sweep.

Runs every (model size, data budget) point of the config in sequence (recjax.scaling.sweep;
finished points are skipped, so re-running resumes the sweep), then fits the power laws per
held-out corpus and writes ROOT/report.md and ROOT/plots/; with `sweep.mixtures`, one report
per mixture in ROOT/<mixture>/ and ROOT/report.md comparing them. `--dry_run` prints the commands;
`--report_only` fits and reports the points already finished.
"""
from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

from recjax.scaling import sweep as sweep_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The sweep: configs/scaling.py[:NAME].")
flags.DEFINE_string("workdir", None, "Root directory: one workdir per point.", required=True)
flags.DEFINE_bool("dry_run", False, "Print the commands without running them.")
flags.DEFINE_bool("report_only", False, "Fit and report the finished points only.")


def main(argv) -> None:
  del argv
  sweep = FLAGS.config
  failed = [] if FLAGS.report_only else sweep_lib.run(sweep, FLAGS.workdir, FLAGS.dry_run)
  if FLAGS.dry_run:
    return
  rows = sweep_lib.collect(sweep, FLAGS.workdir)
  if not rows:
    raise SystemExit(f"no finished point in {FLAGS.workdir}")
  names = [name for name, _ in sweep_lib.mixtures(sweep)]
  if names == [""]:
    print(sweep_lib.write_report(FLAGS.workdir, rows, sweep_lib.fit_rows(rows), failed))
    return
  fits = {}
  for name in names:  # each mixture fitted and reported on its own
    mine = [r for r in rows if r["mixture"] == name]
    if mine:
      fits[name] = sweep_lib.fit_rows(mine)
      sweep_lib.write_report(os.path.join(FLAGS.workdir, name), mine, fits[name],
                             [f for f in failed if f.startswith(os.path.join(FLAGS.workdir,
                                                                             name, ""))])
  print(sweep_lib.write_comparison(FLAGS.workdir, rows, fits))


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main)
