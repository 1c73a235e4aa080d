"""The causal-LM task through the shared trainer: learning, exact resume, sharding, perplexity."""
import jax
import numpy as np
import pytest
from flax import nnx

from recjax import config as config_lib
from recjax.models import lora
from recjax.tasks import build_task
from recjax.tasks.lm import LMTask
from recjax.train import sharding as shard_lib
from recjax.train import trainer
from recjax.train.metrics_writer import read_jsonl, results_table
from tests.trainer_utils import apply_overrides

STEPS = 4


def tiny_config(**overrides):
  """An lm config that compiles and trains in seconds on CPU (byte tokens, 2 x 32 wide)."""
  config = config_lib.base_config("lm")
  config.data.dataset = dict(name="synthetic", num_users=96, num_items=48, num_clusters=4,
                             seed=0)
  config.text.templates = "calrec,profile"
  config.text.seq_len = 96
  config.text.max_history_items = 3
  config.model.overrides = dict(hidden_size=32, num_heads=4, num_kv_heads=4, head_dim=8,
                                mlp_dim=64)
  config.model.vocab_multiple = 64
  config.train.batch_size = 8
  config.train.num_steps = STEPS
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = STEPS
  config.train.progress_bar = False
  config.train.async_checkpointing = False
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 3e-3
  config.eval.corpora = "histories,items"
  config.eval.max_documents = 24
  config.eval.batch_size = 8
  apply_overrides(config, overrides)
  config_lib.check_config(config)
  return config


def _run(config, workdir, devices=None):
  return trainer.train_and_evaluate(config, build_task(config, str(workdir)), str(workdir),
                                    devices=devices)


def _params(result) -> list[np.ndarray]:
  flat = nnx.to_flat_state(nnx.state(result.train_state.model(), nnx.Param))
  return [np.asarray(jax.device_get(v.get_value())) for _, v in flat]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """2 * STEPS uninterrupted steps on one device: the reference for resume and sharding."""
  config = tiny_config(**{"train.num_steps": 2 * STEPS})
  return _run(config, tmp_path_factory.mktemp("full"), devices=jax.devices()[:1])


def test_loss_decreases_and_perplexity_is_reported_per_corpus(tmp_path):
  config = tiny_config(**{"train.num_steps": 12, "lm.tokenizer_vocab_size": 400,
                          "train.checkpoint_every_steps": 0})
  task = build_task(config, str(tmp_path))
  assert (tmp_path / "tokenizer.model").exists()
  assert config.text.tokenizer == str(tmp_path / "tokenizer.model")  # recorded for evaluation
  result = trainer.train_and_evaluate(config, task, str(tmp_path), devices=jax.devices()[:1])
  assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3]) - 0.3
  for split in ("valid", "test"):
    for corpus in ("histories", "items"):
      ppl = result.metrics[f"{split}/{corpus}/ppl"]
      assert 1.0 < ppl < task.model_config.vocab_size
      assert result.metrics[f"{split}/{corpus}/tokens"] > 0
      assert ppl == pytest.approx(np.exp(result.metrics[f"{split}/{corpus}/loss"]))
    assert result.metrics[f"{split}/histories/target_ppl"] > 1.0
  test = {k[len("test/"):]: v for k, v in result.metrics.items() if k.startswith("test/")}
  table = results_table(task, {"test": test})
  assert "LM (test)" in table and "histories/target_ppl" in table and "items/ppl" in table
  # The same task rebuilt from the workdir's config (as recjax.evaluate does) reuses the
  # trained tokenizer and reproduces the reported perplexity.
  again = LMTask(config)
  mesh = shard_lib.make_mesh(config.mesh, jax.devices()[:1])
  with jax.set_mesh(mesh):
    metrics = trainer.evaluate(again, result.train_state.model(), "test", mesh)
  assert metrics["items/ppl"] == pytest.approx(result.metrics["test/items/ppl"], rel=1e-6)


def test_resume_is_bitwise_identical(full_run, tmp_path):
  first = _run(tiny_config(), tmp_path, devices=jax.devices()[:1])
  second = _run(tiny_config(**{"train.num_steps": 2 * STEPS}), tmp_path,
                devices=jax.devices()[:1])
  assert first.step == STEPS and second.step == 2 * STEPS
  assert first.losses + second.losses == full_run.losses  # bitwise, every step
  for a, b in zip(_params(full_run), _params(second)):
    np.testing.assert_array_equal(a, b)
  steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
  assert steps == list(range(1, 2 * STEPS + 1))


@pytest.mark.parametrize("mesh", [dict(data=8), dict(fsdp=8), dict(data=2, tensor=4)],
                         ids=["data", "fsdp", "tensor"])
def test_sharded_training_matches_one_device(full_run, tmp_path, mesh):
  config = tiny_config(**{"train.num_steps": 2 * STEPS, "eval.corpora": "items"})
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  config.mesh.update(mesh)
  many = _run(config, tmp_path, devices=jax.devices()[:8])
  np.testing.assert_allclose(many.losses, full_run.losses, rtol=2e-5)
  np.testing.assert_allclose(many.metrics["test/items/ppl"], full_run.metrics["test/items/ppl"],
                             rtol=1e-4)


def test_lora_trains_only_the_adapters(tmp_path):
  config = tiny_config(**{"model.lora.rank": 4})
  task = build_task(config, str(tmp_path))
  assert task.trainable is lora.LoRAParam
  mesh = shard_lib.make_mesh(config.mesh, jax.devices()[:1])
  state = trainer.create_train_state(config, task, mesh)
  before = dict(nnx.to_flat_state(nnx.state(state.model(), nnx.Param)))
  before = {path: np.asarray(v.get_value()) for path, v in before.items()}
  step = trainer.make_train_step(config, task, state, mesh)
  batch = shard_lib.global_batch(next(iter(task.train_data(0, 1))), mesh)
  with jax.set_mesh(mesh):
    state.state, metrics = step(state.state, batch, 1)
  assert np.isfinite(float(metrics["loss"]))
  after = nnx.to_flat_state(nnx.state(state.model(), nnx.Param))
  changed = {path for path, v in after if not np.array_equal(before[path], v.get_value())}
  adapters = {path for path in before if path[-1] in ("lora_a", "lora_b")}
  assert changed <= adapters and any(path[-1] == "lora_b" for path in changed)


def test_glm_objective_trains_on_blank_infilling_rows(tmp_path):
  """text.objective=glm reaches the training rows: Part B targets, Part A prefix, 2D positions."""
  config = tiny_config(**{"text.objective": "glm", "text.templates": "profile",
                          "model.overrides": dict(hidden_size=32, num_heads=4, num_kv_heads=4,
                                                  head_dim=8, mlp_dim=64,
                                                  num_extra_positions=96),
                          "train.num_steps": 10, "train.checkpoint_every_steps": 0,
                          "eval.corpora": "items", "eval.max_documents": 8})
  task = build_task(config, str(tmp_path))
  batch = next(iter(task.train_data(0, 1)))
  assert {"targets", "prefix_mask", "inter_positions", "intra_positions"} <= set(batch)
  # The loss counts Part B only: no loss token is in Part A.
  assert batch["loss_mask"].sum() > 0 and not (batch["loss_mask"] & batch["prefix_mask"]).any()
  result = trainer.train_and_evaluate(config, task, str(tmp_path), devices=jax.devices()[:1])
  assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3]) - 0.2
