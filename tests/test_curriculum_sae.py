"""Top-k sparse-autoencoder semantic IDs: trained by the shared trainer, ordered, unique, seeded."""
from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recjax.curriculum import sae
from recjax.tasks import build_task
from recjax.tasks.semantic_ids import load_semantic_ids
from recjax.train import trainer
from recjax.train.metrics_writer import read_jsonl
from tests.cli_utils import REPO, cli_overrides, config_file, run_main_env
from tests.datasets import require_data_dir

ONE = jax.devices()[:1]
# 1,000 synthetic items, 256 latents, codes of 4 latents: seconds per run.
TINY = {"data.dataset": {"name": "synthetic", "num_users": 200, "num_items": 1000,
                         "num_clusters": 20, "seed": 0},
        "embed.dim": 64, "model.num_latents": 256, "model.k": 4, "train.batch_size": 256,
        "train.num_steps": 150, "train.log_every_steps": 1, "train.eval_every_steps": 0,
        "train.checkpoint_every_steps": 0, "train.progress_bar": False,
        "train.async_checkpointing": False, "data.num_threads": 0}


def tiny_config(**overrides):
  return config_file("semantic_ids", "sae,synthetic", {**TINY, **overrides})


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
  """`python -m recjax.main` on the tiny config, as a user runs it (seed 0)."""
  workdir = tmp_path_factory.mktemp("sae") / "run"
  proc = subprocess.run([sys.executable, "-m", "recjax.main",
                         "--config=configs/semantic_ids.py:sae,synthetic",
                         f"--workdir={workdir}", *cli_overrides(TINY)],
                        cwd=REPO, env=run_main_env(), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_main_writes_unique_codes_and_the_report(main_run):
  workdir, proc = main_run
  ids = load_semantic_ids(str(workdir))
  assert ids.method == "top-k SAE" and ids.num_items == 1000 and ids.num_digits == 5
  assert len(set(ids.tokens()[1:])) == 1000
  assert "top-k SAE (test)" in proc.stdout
  report = (workdir / "semantic_ids.txt").read_text()
  assert report.strip() == ids.report()
  assert "level d: k=256" in report and "latents used at any position" in report
  results = json.loads((workdir / "results.json").read_text())
  assert results["test/unique_codes"] == 1.0
  assert results["test/collision_rate"] == pytest.approx(ids.collision_rate)
  for j, letter in enumerate("abcd"):
    assert results[f"test/utilisation_{letter}"] == pytest.approx(ids.levels[j].utilisation)


def test_the_loss_falls(main_run):
  workdir, _ = main_run
  rows = [r for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
  losses = [r["train/loss"] for r in rows]
  assert len(losses) == TINY["train.num_steps"]
  assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10]), (losses[:10], losses[-10:])
  assert all(0 < r["train/utilisation_a"] <= 1 for r in rows)
  # More latents reconstruct better: the error falls along the code.
  errors = [s.reconstruction_mse for s in load_semantic_ids(str(workdir)).levels]
  assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_deterministic_per_seed(main_run, tmp_path):
  workdir, _ = main_run
  for name, seed in (("again", 0), ("seed1", 1)):
    config = tiny_config(seed=seed)
    trainer.train_and_evaluate(config, build_task(config, str(tmp_path / name)),
                               str(tmp_path / name), devices=ONE)
  reference = load_semantic_ids(str(workdir)).codes
  np.testing.assert_array_equal(load_semantic_ids(str(tmp_path / "again")).codes, reference)
  assert not np.array_equal(load_semantic_ids(str(tmp_path / "seed1")).codes, reference)


def test_code_is_the_k_most_active_latents_in_order():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(200, 16)).astype(np.float32)
  model = sae.TopKSAE(sae.SAEConfig(input_dim=16, num_latents=64, k=5), nnx.Rngs(0))
  model.b_enc[...] = jnp.asarray(rng.normal(size=64) * 0.1, jnp.float32)
  ids = sae.semantic_ids(model, x)
  pre = np.maximum(x @ np.asarray(model.w_enc[...]) + np.asarray(model.b_enc[...]), 0)
  expected = np.argsort(-pre, axis=1, kind="stable")[:, :5]
  np.testing.assert_array_equal(ids.codes[1:, :5], expected)
  assert len({tuple(c) for c in ids.codes[1:]}) == 200
  # The reconstruction from the k latents is what the loss sees.
  values, indices = model.encode(jnp.asarray(x))
  x_hat = model.decode(values, indices)
  mse = float(jnp.mean(jnp.sum((jnp.asarray(x) - x_hat) ** 2, -1)))
  assert ids.levels[-1].reconstruction_mse == pytest.approx(mse, rel=1e-4)


def test_catalogue_smaller_than_the_dictionary_trains_and_says_so(tmp_path):
  # The documented rule: allowed; at most items * k latents can be used (utilisation shows it).
  config = tiny_config(**{"data.dataset": {"name": "synthetic", "num_users": 50,
                                           "num_items": 30, "num_clusters": 3, "seed": 0},
                          "train.num_steps": 20, "train.batch_size": 64})
  trainer.train_and_evaluate(config, build_task(config, str(tmp_path)), str(tmp_path),
                             devices=ONE)
  ids = load_semantic_ids(str(tmp_path))
  assert ids.num_items == 30 and len(set(ids.tokens()[1:])) == 30
  assert all(s.used <= 30 and s.utilisation <= 30 / 256 for s in ids.levels)
  assert "latents used at any position" in ids.report()
  with pytest.raises(ValueError, match="1 <= k <= num_latents"):
    sae.TopKSAE(sae.SAEConfig(input_dim=4, num_latents=4, k=8), nnx.Rngs(0))


def test_real_catalogue_amazon_games6k(tmp_path):
  root = require_data_dir("amazon_games6k")
  config = tiny_config(**{"data.dataset": {"name": "amazon_games6k"}, "data.root": str(root),
                          "embed.method": "wordllama", "model.num_latents": 1024,
                          "model.k": 8, "train.batch_size": 512, "train.num_steps": 100,
                          "train.log_every_steps": 50})
  trainer.train_and_evaluate(config, build_task(config, str(tmp_path)), str(tmp_path),
                             devices=ONE)
  ids = load_semantic_ids(str(tmp_path))
  print(ids.report())
  assert ids.num_items == 16859 and len(set(ids.tokens()[1:])) == 16859
  assert ids.collision_rate < 0.05  # ordered 8-latent codes rarely coincide
  assert ids.levels[0].utilisation > 0.5


def test_aux_loss_rebuilds_the_residual_from_the_most_active_dead_latents():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(12, 8)).astype(np.float32)
  model = sae.TopKSAE(sae.SAEConfig(input_dim=8, num_latents=16, k=2, aux_k=3), nnx.Rngs(0))
  out = model(jnp.asarray(x))
  dead = np.zeros(16, bool)
  dead[[1, 4, 5, 9, 12]] = True
  aux = np.asarray(model.aux_loss(jnp.asarray(x), out, jnp.asarray(dead)))
  # numpy: the residual from the top-2 reconstruction, rebuilt from the 3 most active dead ones.
  w_dec = np.asarray(model.w_dec[...])
  d = w_dec / np.linalg.norm(w_dec, axis=-1, keepdims=True)
  pre = np.maximum((x - np.asarray(model.b_pre[...])) @ np.asarray(model.w_enc[...])
                   + np.asarray(model.b_enc[...]), 0)
  top = np.argsort(-pre, axis=1, kind="stable")[:, :2]
  x_hat = np.asarray(model.b_pre[...]) + np.einsum(
      "bk,bkd->bd", np.take_along_axis(pre, top, 1), d[top])
  masked = np.where(dead[None], pre, 0)
  aux_top = np.argsort(-masked, axis=1, kind="stable")[:, :3]
  e_hat = np.einsum("bk,bkd->bd", np.take_along_axis(masked, aux_top, 1), d[aux_top])
  e = x - x_hat
  var = lambda a: np.mean(np.sum((a - a.mean(0)) ** 2, -1))
  np.testing.assert_allclose(aux, var(x) / var(e) * np.sum((e - e_hat) ** 2, -1), rtol=1e-4,
                             atol=1e-5)
  # At most aux_k dead latents: all of them rebuild the residual.
  few = np.zeros(16, bool)
  few[[4, 9]] = True
  aux_few = np.asarray(model.aux_loss(jnp.asarray(x), out, jnp.asarray(few)))
  e_few = np.where(few[None], pre, 0) @ d
  np.testing.assert_allclose(aux_few, var(x) / var(e) * np.sum((e - e_few) ** 2, -1),
                             rtol=1e-4, atol=1e-5)
  # Without dead latents the term is 0; its gradient reaches dead latents only.
  assert float(model.aux_loss(jnp.asarray(x), out, jnp.zeros(16, bool)).sum()) == 0.0
  grads = nnx.grad(lambda m: m.aux_loss(jnp.asarray(x), m(jnp.asarray(x)),
                                        jnp.asarray(dead)).sum())(model)
  w_dec_grad = np.abs(np.asarray(grads.w_dec[...])).sum(-1)
  assert np.all(w_dec_grad[~dead] == 0) and w_dec_grad[dead].sum() > 0


def test_the_trainer_keeps_the_unfired_counters_and_reports_dead_latents(tmp_path):
  # 1,000 items x 4 slots cannot keep 1,024 latents alive: some die, and the counters say so.
  config = tiny_config(**{"model.num_latents": 1024, "model.dead_after": 20,
                          "train.num_steps": 60})
  trainer.train_and_evaluate(config, build_task(config, str(tmp_path)), str(tmp_path),
                             devices=ONE)
  rows = [r for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
  assert rows[0]["train/dead_latents"] == 0  # nothing is dead before dead_after steps
  assert rows[-1]["train/dead_latents"] > 0.05 and rows[-1]["train/aux_loss"] > 0
  ids = load_semantic_ids(str(tmp_path))
  assert ids.shared_digits == 4  # shared_vocabulary: the 4 positions share REC<latent>
  assert any(n.startswith("dead latents at the end of training") for n in ids.notes)
