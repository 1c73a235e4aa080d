"""The scaling sweep (python -m recjax.scaling): points as real recjax workdirs, resume, a
failing point kept out, the fits and the report with plots."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from recjax.scaling import sweep as sweep_lib
from tests.cli_utils import REPO, config_file, run_main_env

TINY = ["--config.data.dataset.num_users=96", "--config.data.dataset.num_items=48",
        "--config.data.dataset.num_clusters=4", "--config.lm.tokenizer_vocab_size=0",
        "--config.text.tokenizer=byte", "--config.text.seq_len=96",
        "--config.text.max_history_items=3", "--config.train.batch_size=8",
        "--config.model.vocab_multiple=64", "--config.eval.max_documents=16",
        "--config.train.checkpoint_every_steps=1000"]


@pytest.fixture(autouse=True)
def _one_device_points(monkeypatch):
  """Each point runs as a user's `python -m recjax.main` does: one CPU device, not the
  suite's 8 virtual ones, and the suite's compilation cache (points share their programs)."""
  for key, value in run_main_env().items():
    monkeypatch.setenv(key, value)
  monkeypatch.chdir(REPO)


def _sweep(sizes, steps, extra=()):
  return ml_collections.ConfigDict(dict(base="configs/lm.py", sizes=sizes, steps=steps,
                                        overrides=TINY + list(extra)))


def test_sweep_runs_resumes_and_reports(tmp_path, capfd):
  sizes = dict(a=dict(num_layers=1, hidden_size=16, num_heads=2, num_kv_heads=2, head_dim=8,
                      mlp_dim=32),
               b=dict(num_layers=1, hidden_size=32, num_heads=2, num_kv_heads=2, head_dim=16,
                      mlp_dim=64),
               bad=dict(no_such_field=1))  # an unknown knob: the run fails, the sweep goes on
  sweep = _sweep(sizes, [2, 4])
  failed = sweep_lib.run(sweep, str(tmp_path))
  assert sorted(os.path.basename(f) for f in failed) == ["bad_2", "bad_4"]
  rows = sweep_lib.collect(sweep, str(tmp_path))
  assert [(r["size"], r["steps"]) for r in rows] == [("a", 2), ("a", 4), ("b", 2), ("b", 4)]
  for r in rows:
    results = json.loads(open(os.path.join(r["workdir"], "results.json")).read())
    assert r["N"] == results["num_params"] > 0
    assert r["D"] == r["steps"] * 8 * 96
    assert set(r["losses"]) == {"histories", "items"}
    assert r["losses"]["items"] == results["test/items/loss"]
    assert r["C"] == 6 * r["N"] * r["D"]
    assert 0 < r["train_s"] < 600 and 0 < r["eval_s"] < 600
  assert rows[0]["N"] == rows[1]["N"] < rows[2]["N"]
  # Re-running skips every finished point (and runs the failed ones again).
  capfd.readouterr()
  assert len(sweep_lib.run(sweep, str(tmp_path))) == 2
  printed = capfd.readouterr().out
  assert printed.count("finished, skipped") == 4 and printed.count("failed (exit") == 2
  out = subprocess.run([sys.executable, "-m", "recjax.scaling", "--config=configs/scaling.py",
                        f"--workdir={tmp_path}", "--dry_run"], capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0 and "s1, 60 steps: $" in out.stdout
  text = sweep_lib.write_report(str(tmp_path), rows, sweep_lib.fit_rows(rows), failed)
  assert "| a |" in text and "no fit" in text  # two budgets per size: too few points to fit
  (b4,) = [line for line in text.splitlines() if line.startswith("| b | ") and "| 4 |" in line]
  assert f"| {rows[3]['C']:.3g} | {rows[3]['train_s']:.0f} | {rows[3]['eval_s']:.0f} |" in b4
  assert f"min of evaluation, {sum(r['C'] for r in rows):.3g} FLOPs." in text
  assert os.path.exists(tmp_path / "plots" / "items.png")


def test_fits_recover_known_constants_and_plot(tmp_path):
  # Points generated from L(N, D) = 1.5 + 40 N^-0.3 + 900 D^-0.4 (noise-free).
  rows = []
  for n in (1e5, 3e5, 1e6, 3e6):
    for d in (1e6, 4e6, 1.6e7, 6.4e7):
      loss = 1.5 + 40 * n ** -0.3 + 900 * d ** -0.4
      rows.append(dict(size=f"n{int(n)}", steps=int(d // 1000), N=int(n), D=int(d),
                       losses={"walks": loss}, workdir=""))
  fits = sweep_lib.fit_rows(rows)
  joint = fits["walks"]["joint"]
  assert joint.r2 > 0.9999
  np.testing.assert_allclose([joint.params[k] for k in ("E", "alpha", "beta")],
                             [1.5, 0.3, 0.4], rtol=1e-3)
  per_size = fits["walks"]["data"]["n100000"]
  assert per_size.r2 > 0.9999
  np.testing.assert_allclose(per_size.params["alpha"], 0.4, rtol=1e-3)
  text = sweep_lib.write_report(str(tmp_path), rows, fits)
  assert "R^2 = 1.0000 over 16 points" in text
  assert (tmp_path / "plots" / "walks.png").stat().st_size > 1000


def test_mixtures_repeat_the_grid_share_a_tokenizer_and_compare(tmp_path):
  """`sweep.mixtures` through `python -m recjax.scaling` as a user runs it: one grid per
  training mixture of the curriculum (all modalities; walks alone), one comparison report."""
  config = tmp_path / "sweep.py"
  overrides = [o for o in TINY if "tokenizer" not in o] + [
      "--config.lm.tokenizer_vocab_size=512"]  # a SentencePiece model: the shared tokenizer
  config.write_text(f"""
import ml_collections
def get_config():
  return ml_collections.ConfigDict(dict(
      base="configs/curriculum.py:synthetic",
      sizes=dict(a=dict(num_layers=1, hidden_size=16, num_heads=2, num_kv_heads=2, head_dim=8,
                        mlp_dim=32)),
      steps=[2, 3], overrides={overrides!r},
      mixtures=dict(walks=["--config.curriculum.rates.item_text=0.0",
                           "--config.curriculum.rates.rules=0.0",
                           "--config.curriculum.rates.histories=0.0"], all=[]),
      tokenizer_mixture="all"))
""")
  root = tmp_path / "sweep"
  out = subprocess.run([sys.executable, "-m", "recjax.scaling", f"--config={config}",
                        f"--workdir={root}"], capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  # "all" runs first (it trains the tokenizer); every later point reads that tokenizer.
  assert out.stdout.index("[1] all, a, 2 steps") < out.stdout.index("[3] walks, a, 2 steps")
  walks_config = json.loads((root / "walks" / "a_2" / "config.json").read_text())
  assert walks_config["text"]["tokenizer"] == str(root / "all" / "a_2" / "tokenizer.model")
  assert walks_config["curriculum"]["rates"]["rules"] == 0.0
  assert not (root / "walks" / "a_2" / "tokenizer.model").exists()
  report = (root / "report.md").read_text()
  assert "training mixtures compared" in report and "[walks](walks/report.md)" in report
  assert "Ranked at a, 3 steps: " in report
  # Each mixture's own report and plots; both evaluated on the same held-out corpora.
  for name in ("all", "walks"):
    assert "| a |" in (root / name / "report.md").read_text()
  first = [line for line in report.splitlines() if line.startswith("| a | 3 |")][0]
  assert first.count("|") == 5 and "-" not in first.split("|")[3:5]


def test_long_grid_trains_one_small_tokenizer_the_other_points_share(tmp_path):
  sweep = config_file("scaling", "amazon_games6k,long")
  grid = sweep_lib.points(sweep, str(tmp_path))
  assert [p.steps for p in grid[:4]] == [120, 240, 480, 960] and len(grid) == 16
  assert "--config.lm.tokenizer_vocab_size=2000" in grid[0].command
  assert grid[0].tokenizer_args == ()
  for point in grid[1:]:  # the shared tokenizer's overrides come last, so they win
    assert point.tokenizer_args[-1] == "--config.lm.tokenizer_vocab_size=0"
  with pytest.raises(ValueError, match="NAME,long"):
    config_file("scaling", "amazon_games6k,longer")
