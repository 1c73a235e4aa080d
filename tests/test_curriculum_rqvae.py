"""RQ-VAE semantic IDs: trained by the shared trainer, unique, seeded, dead codes restarted."""
from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recjax.curriculum import rqvae
from recjax.tasks import build_task
from recjax.tasks.semantic_ids import load_semantic_ids
from recjax.train import trainer
from recjax.train.metrics_writer import read_jsonl
from tests.cli_utils import REPO, cli_overrides, config_file, run_main_env
from tests.datasets import require_data_dir

ONE = jax.devices()[:1]
# 1,000 synthetic items, 3 x 32 codes, a small MLP: seconds per run. Two microbatches a step:
# the restart state must be carried from one to the next.
TINY = {"data.dataset": {"name": "synthetic", "num_users": 200, "num_items": 1000,
                         "num_clusters": 20, "seed": 0}, "train.grad_accum_steps": 2,
        "embed.dim": 64, "model.encoder_widths": (64,), "model.latent_dim": 16,
        "model.codebook_size": 32, "model.restart_after": 20, "train.batch_size": 256,
        "train.num_steps": 150, "train.log_every_steps": 1, "train.eval_every_steps": 0,
        "train.checkpoint_every_steps": 0, "train.progress_bar": False,
        "train.async_checkpointing": False, "data.num_threads": 0, "eval.rq_kmeans_baseline": False}


def tiny_config(**overrides):
  return config_file("semantic_ids", "rqvae,synthetic", {**TINY, **overrides})


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
  """`python -m recjax.main` on the tiny config, as a user runs it (seed 0)."""
  workdir = tmp_path_factory.mktemp("rqvae") / "run"
  proc = subprocess.run([sys.executable, "-m", "recjax.main",
                         "--config=configs/semantic_ids.py:rqvae,synthetic",
                         f"--workdir={workdir}",
                         *cli_overrides({**TINY, "eval.rq_kmeans_baseline": True})],
                        cwd=REPO, env=run_main_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_main_writes_unique_codes_and_the_report(main_run):
  workdir, proc = main_run
  ids = load_semantic_ids(str(workdir))
  assert ids.method == "RQ-VAE" and ids.num_items == 1000 and ids.num_digits == 4
  assert len(set(ids.tokens()[1:])) == 1000
  assert "RQ-VAE (test)" in proc.stdout and "RQ-KMeans (test)" in proc.stdout
  report = (workdir / "semantic_ids.txt").read_text()
  assert report.strip() == ids.report()
  assert "collision rate" in report and "level c: k=32" in report and "perplexity" in report
  results = json.loads((workdir / "results.json").read_text())
  assert results["test/collision_rate"] == pytest.approx(ids.collision_rate)
  assert results["test/unique_codes"] == 1.0
  for level, letter in enumerate("abc"):
    assert results[f"test/utilisation_{letter}"] == pytest.approx(ids.levels[level].utilisation)
    assert results[f"test/perplexity_{letter}"] == pytest.approx(ids.levels[level].perplexity)


def test_the_loss_falls_and_usage_is_logged(main_run):
  workdir, _ = main_run
  rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
  losses = [r["train/loss"] for r in rows]
  assert len(losses) == TINY["train.num_steps"]
  assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), (losses[:10], losses[-10:])
  for letter in "abc":
    assert all(0 < r[f"train/utilisation_{letter}"] <= 1 for r in rows)
    assert all(1 <= r[f"train/perplexity_{letter}"] <= 32 for r in rows)


def test_restart_state_survives_the_train_steps(main_run):
  # A restart needs a code unused for restart_after consecutive steps: the trainer must keep
  # the QuantizerState counters from step to step for any restart to happen.
  workdir, _ = main_run
  rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
  restarted = sum(r[f"train/restarted_{l}"] for r in rows for l in "abc")
  assert restarted > 0
  assert "restarts during training per level" in load_semantic_ids(str(workdir)).report()


def test_deterministic_per_seed_and_resumed_exactly(main_run, tmp_path, blobs):
  workdir, _ = main_run
  # In-process, same seed, stopped half-way and resumed (codebook offsets and usage counters
  # come back from the checkpoint): the codes of the command-line run.
  half = TINY["train.num_steps"] // 2
  for steps in (half, 2 * half):
    config = tiny_config(**{"train.num_steps": steps, "train.checkpoint_every_steps": half})
    result = trainer.train_and_evaluate(config, build_task(config, str(tmp_path)),
                                        str(tmp_path), devices=ONE)
  assert result.step == 2 * half
  np.testing.assert_array_equal(load_semantic_ids(str(tmp_path)).codes,
                                load_semantic_ids(str(workdir)).codes)
  config = rqvae.RQVAEConfig(input_dim=12, hidden=(32,), latent_dim=8, codebook_size=16)
  codes = []
  for seed in (0, 0, 1):
    model = rqvae.RQVAE(config, nnx.Rngs(seed))
    rqvae.kmeans_init(model, blobs)
    codes.append(rqvae.semantic_ids(model, blobs).codes)
  np.testing.assert_array_equal(codes[0], codes[1])
  assert not np.array_equal(codes[0], codes[2])


@pytest.fixture(scope="module")
def blobs():
  """600 points of 40 Gaussian blobs in 12-d."""
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(40, 12))
  return (centers[rng.integers(0, 40, 600)] + 0.2 * rng.normal(size=(600, 12))).astype(np.float32)


def _model(blobs, restart_after):
  config = rqvae.RQVAEConfig(input_dim=12, hidden=(32,), latent_dim=8, levels=2,
                             codebook_size=16, restart_after=restart_after)
  model = rqvae.RQVAE(config, nnx.Rngs(0))
  rqvae.kmeans_init(model, blobs)
  # Kill half of level a: codewords far from every encoder output are never chosen.
  model.codebook[...] = model.codebook[...].at[0, 8:].set(100.0)
  return model


@pytest.mark.parametrize("restart_after", [0, 3])
def test_dead_code_restart_revives_dead_codes(blobs, restart_after):
  model = _model(blobs, restart_after)
  assert rqvae.semantic_ids(model, blobs).levels[0].used <= 8
  step = nnx.jit(lambda m, x, key: m.loss(x, key))
  rng = np.random.default_rng(0)
  for i in range(4):
    batch = jnp.asarray(blobs[rng.choice(600, 128, replace=False)])
    _, metrics = step(model, batch, jax.random.key(i))
  ids = rqvae.semantic_ids(model, blobs)
  if not restart_after:  # without restarts the dead codes stay dead
    assert ids.levels[0].used <= 8 and int(model.restarts[0]) == 0
    return
  # After 3 unused steps each dead code was re-seeded with an encoder output of the batch.
  assert int(model.restarts[0]) >= 8 and float(metrics["restarted_a"]) == 0
  z = np.asarray(nnx.jit(lambda m, x: m.encode(x))(model, jnp.asarray(blobs)))
  books = np.asarray(model.codewords())[0, 8:]
  nearest = np.abs(books[:, None] - z[None]).max(-1).min(-1)
  assert nearest.max() < 1e-5  # every revived codeword is one item's encoder output
  assert ids.levels[0].used > 12
  assert (np.asarray(model.unused[...]) < 3).all()


def test_catalogue_smaller_than_the_codebook_is_a_clear_error():
  config = tiny_config(**{"data.dataset": {"name": "synthetic", "num_users": 50,
                                           "num_items": 20, "num_clusters": 2, "seed": 0}})
  with pytest.raises(ValueError, match=r"catalogue has 20 items, fewer than codebook_size=32.*"
                                       r"codebook_size <= 20, or use RQ-KMeans"):
    build_task(config, None)
  with pytest.raises(ValueError, match="missing_text must be one of"):
    build_task(tiny_config(**{"embed.missing_text": "skip"}), None)


def test_real_catalogue_uses_more_than_half_of_each_codebook(tmp_path):
  root = require_data_dir("amazon_games6k")
  # wordllama embeds the 16,859 titles in ~2 s (tfidf_svd at 256-d takes ~40 s on 2 cores).
  config = tiny_config(**{"data.dataset": {"name": "amazon_games6k"}, "data.root": str(root),
                          "embed.method": "wordllama", "model.encoder_widths": (256, 128),
                          "model.latent_dim": 32, "model.codebook_size": 256,
                          "model.kmeans_iters": 20, "model.restart_after": 50,
                          "train.batch_size": 512, "train.num_steps": 100,
                          "train.log_every_steps": 50, "train.grad_accum_steps": 1})
  task = build_task(config, str(tmp_path))
  result = trainer.train_and_evaluate(config, task, str(tmp_path), devices=ONE)
  # The trainer kept the usage counters the loss set (they start at 0).
  assert np.asarray(result.train_state.model().unused[...]).max() > 0
  ids = load_semantic_ids(str(tmp_path))
  print(ids.report())
  assert ids.num_items == 16859 and len(set(ids.tokens()[1:])) == 16859
  for level in ids.levels:
    assert level.k == 256 and level.utilisation > 0.5, ids.report()
  assert ids.collision_rate < 0.5
