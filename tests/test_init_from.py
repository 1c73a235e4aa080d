"""Where a run starts from: its own checkpoint > config.init_from (another workdir) > scratch."""
import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from recjax.tasks import build_task
from recjax.train import sharding as shard_lib
from recjax.train import trainer
from recjax.train.metrics_writer import read_jsonl
from tests.trainer_utils import params_of, tiny_config, tiny_task

ONE = jax.devices()[:1]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """Run 1: a 3-step SASRec run whose parameters the other runs start from."""
  workdir = tmp_path_factory.mktemp("source")
  config = tiny_config(**{"train.num_steps": 3})
  result = trainer.train_and_evaluate(config, tiny_task(config), str(workdir), devices=ONE)
  return workdir, result


def _fresh_state(config, task=None):
  task = task or tiny_task(config)
  mesh = shard_lib.make_mesh(config.mesh, ONE)
  return task, trainer.create_train_state(config, task, mesh)


def _flat(state_or_model, filt=nnx.Param) -> dict:
  return {tuple(map(str, p)): np.asarray(jax.device_get(v.get_value()))
          for p, v in nnx.to_flat_state(nnx.state(state_or_model, filt))}


def test_init_from_reads_only_the_parameters(source):
  workdir, result = source
  config = tiny_config(**{"init_from.path": str(workdir)})
  task, train_state = _fresh_state(config)
  step, differing = trainer.init_from_workdir(config, task, train_state, str(workdir))
  assert step == 3 and differing == []
  model, optimizer = nnx.merge(train_state.graphdef, train_state.state)
  for a, b in zip(params_of(result.train_state), params_of(train_state)):
    np.testing.assert_array_equal(a, b)
  # The optimizer starts fresh: no step taken, zero Adam moments.
  assert int(optimizer.step.get_value()) == 0
  moments = [np.asarray(x) for x in jax.tree.leaves(nnx.state(optimizer.opt_state))
             if np.ndim(x) > 0]
  assert moments and all(not m.any() for m in moments)


def test_chained_runs_then_own_checkpoint_wins(source, tmp_path, capsys):
  workdir, _ = source
  scratch = trainer.train_and_evaluate(
      tiny_config(**{"train.num_steps": 2}), tiny_task(tiny_config()), str(tmp_path / "scratch"),
      devices=ONE)
  config = tiny_config(**{"train.num_steps": 2, "init_from.path": str(workdir)})
  capsys.readouterr()
  second = trainer.train_and_evaluate(config, tiny_task(config), str(tmp_path / "second"),
                                      devices=ONE)
  assert f"initialised the parameters from {workdir} at step 3" in capsys.readouterr().out
  # Same fresh data order as the scratch run, other parameters: other losses; steps from 1.
  assert second.losses[0] != scratch.losses[0]
  assert [r["step"] for r in read_jsonl(tmp_path / "second" / "metrics.jsonl")
          if "train/loss" in r] == [1, 2]
  # Run 2 again, longer: its own checkpoint wins; init_from is not even looked at.
  config = tiny_config(**{"train.num_steps": 4, "init_from.path": str(tmp_path / "gone")})
  again = trainer.train_and_evaluate(config, tiny_task(config), str(tmp_path / "second"),
                                     devices=ONE)
  assert "resumed from step 2 of 4" in capsys.readouterr().out
  assert len(again.losses) == 2 and again.step == 4


def test_missing_workdir_and_step_are_named(source, tmp_path):
  workdir, _ = source
  config = tiny_config(**{"init_from.path": str(tmp_path / "nowhere")})
  with pytest.raises(trainer.RestoreError, match="nowhere' does not exist"):
    trainer.train_and_evaluate(config, tiny_task(config), str(tmp_path / "run"), devices=ONE)

  task, train_state = _fresh_state(tiny_config())
  with pytest.raises(trainer.RestoreError, match=r"init_from.step=5: .* has no checkpoint for "
                                                 r"that step; it has \[3\]"):
    trainer.init_from_workdir(tiny_config(), task, train_state, str(workdir), step=5)

  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(workdir / "config.json", empty / "config.json")
  with pytest.raises(trainer.RestoreError, match="no finished checkpoint in"):
    trainer.init_from_workdir(tiny_config(), task, train_state, str(empty))

  plain = tmp_path / "plain"
  plain.mkdir()
  config = tiny_config(**{"init_from.path": str(plain)})
  with pytest.raises(trainer.RestoreError, match="neither a recjax workdir"):
    trainer.train_and_evaluate(config, tiny_task(config), str(tmp_path / "run2"), devices=ONE)


def test_other_task_with_the_same_parameters_is_accepted(source, tmp_path):
  """What must match is the parameters, not the task: an lm workdir may start a CALRec stage."""
  workdir, _ = source
  other = tmp_path / "other"
  other.mkdir()
  os.symlink(workdir / "checkpoints", other / "checkpoints")
  config_json = json.loads((workdir / "config.json").read_text())
  config_json["task"] = "lm"
  (other / "config.json").write_text(json.dumps(config_json))
  task, train_state = _fresh_state(tiny_config())
  fresh = jax.tree.map(np.asarray, nnx.state(train_state.model(), nnx.Param))
  trainer.init_from_workdir(tiny_config(), task, train_state, str(other))
  restored = jax.tree.map(np.asarray, nnx.state(train_state.model(), nnx.Param))
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(fresh), jax.tree.leaves(restored)))
  # A mismatch names both tasks.
  config = tiny_config(**{"model.hidden": 8})
  task, train_state = _fresh_state(config)
  with pytest.raises(trainer.RestoreError, match="task 'lm'.*does not fit this model "
                                                 r"\(task 'sasrec'\)"):
    trainer.init_from_workdir(config, task, train_state, str(other))


@pytest.mark.parametrize("override, messages", [
    ({"model.hidden": 8}, ["item_embedding/embedding: checkpoint (65, 16), this model (65, 8)",
                           "model blocks differ in: hidden (16 -> 8)"]),
    ({"model.num_blocks": 1}, ["checkpoint variables this model lacks: blocks/1/",
                               "num_blocks (2 -> 1)"]),
    ({"model.num_blocks": 3}, ["parameters the checkpoint lacks: blocks/2/",
                               "num_blocks (2 -> 3)"]),
])
def test_other_architecture_names_paths_shapes_and_config_keys(source, override, messages):
  workdir, _ = source
  config = tiny_config(**override)
  task, train_state = _fresh_state(config)
  with pytest.raises(trainer.RestoreError) as err:
    trainer.init_from_workdir(config, task, train_state, str(workdir))
  for message in messages:
    assert message in str(err.value)


def test_lora_run_starts_from_a_full_parameter_workdir(tmp_path):
  from tests.test_lm import tiny_config as lm_config  # pylint: disable=g-import-not-at-top
  full = lm_config(**{"train.num_steps": 2})
  base = trainer.train_and_evaluate(full, build_task(full, str(tmp_path / "full")),
                                    str(tmp_path / "full"), devices=ONE)
  config = lm_config(**{"model.lora.rank": 4, "init_from.path": str(tmp_path / "full")})
  task = build_task(config, str(tmp_path / "lora"))
  _, fresh = _fresh_state(config, task)
  _, train_state = _fresh_state(config, task)
  _, differing = trainer.init_from_workdir(config, task, train_state, str(tmp_path / "full"))
  assert differing == ["lora.rank (0 -> 4)"]
  trained, fresh_params = _flat(base.train_state.model()), _flat(fresh.model())
  restored = _flat(train_state.model())
  adapters = {k for k in restored if k[-1] in ("lora_a", "lora_b")}
  assert adapters and set(restored) - adapters == set(trained)
  for key in trained:  # the base: run 1's trained weights
    np.testing.assert_array_equal(restored[key], trained[key])
  for key in adapters:  # the adapters: this run's own initialisation
    np.testing.assert_array_equal(restored[key], fresh_params[key])


def test_added_tokens_grow_the_vocabulary_tables(tmp_path):
  # A stage that registers more tokens (semantic-ID codes) than its source keeps the source's
  # rows and gives the new ones rows near the mean of the old; the other way is refused.
  from tests.test_lm import tiny_config as lm_config  # pylint: disable=g-import-not-at-top
  small = lm_config(**{"train.num_steps": 2})
  base = trainer.train_and_evaluate(small, build_task(small, str(tmp_path / "small")),
                                    str(tmp_path / "small"), devices=ONE)
  config = lm_config(**{"text.semantic_codes": 200, "init_from.path": str(tmp_path / "small")})
  task = build_task(config, str(tmp_path / "big"))
  _, train_state = _fresh_state(config, task)
  _, differing = trainer.init_from_workdir(config, task, train_state, str(tmp_path / "small"))
  old, new = _flat(base.train_state.model()), _flat(train_state.model())
  grown = [k for k in old if old[k].shape != new[k].shape]
  assert grown and all(k[-1] in ("embedding", "lm_head") for k in grown)
  for key in old:
    if key not in grown:
      np.testing.assert_array_equal(new[key], old[key])
  table_old, table_new = old[("embedding",)], new[("embedding",)]
  n = len(table_old)
  assert len(table_new) > n
  np.testing.assert_array_equal(table_new[:n], table_old)
  spread = np.abs(table_new[n:] - table_old.mean(0)).max()
  assert spread < 0.1 * table_old.std(0).max() + 1e-6
  assert any(f"embedding grown from {n} to {len(table_new)} vocabulary rows" in d
             for d in differing)
  # Fewer tokens than the checkpoint: not a growth, an architecture mismatch.
  trainer.train_and_evaluate(config, task, str(tmp_path / "big"), devices=ONE)
  smaller = lm_config(**{"init_from.path": str(tmp_path / "big")})
  task_small = build_task(smaller, str(tmp_path / "again"))
  _, small_state = _fresh_state(smaller, task_small)
  with pytest.raises(trainer.RestoreError, match=r"embedding: checkpoint \("):
    trainer.init_from_workdir(smaller, task_small, small_state, str(tmp_path / "big"))
