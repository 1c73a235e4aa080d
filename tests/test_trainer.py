"""The shared trainer: exact resume, sharding invariance, accumulation, NaN and bad checkpoints."""
import os
import shutil
import signal

import jax
import numpy as np
import pytest

from recjax.train import checkpoint as ckpt_lib
from recjax.train import sharding as shard_lib
from recjax.train import trainer
from recjax.train.metrics_writer import read_jsonl
from tests.trainer_utils import params_of, tiny_config, tiny_task


def _run(config, workdir, devices=None):
  return trainer.train_and_evaluate(config, tiny_task(config), str(workdir), devices=devices)


def test_resume_is_bitwise_identical(tmp_path, capsys):
  full = _run(tiny_config(**{"train.num_steps": 6}), tmp_path / "full")
  first = _run(tiny_config(**{"train.num_steps": 3}), tmp_path / "resumed")
  capsys.readouterr()
  second = _run(tiny_config(**{"train.num_steps": 6}), tmp_path / "resumed")
  assert "resumed from step 3 of 6" in capsys.readouterr().out
  assert first.step == 3 and second.step == 6
  assert first.losses + second.losses == full.losses  # bitwise, every step
  for a, b in zip(params_of(full.train_state), params_of(second.train_state)):
    np.testing.assert_array_equal(a, b)
  steps = [r["step"] for r in read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
           if "train/loss" in r]
  assert steps == [1, 2, 3, 4, 5, 6]


def test_workdir_outputs(tmp_path):
  result = _run(tiny_config(**{"train.log_every_steps": 4}), tmp_path)
  assert (tmp_path / "config.json").exists()
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  records = read_jsonl(tmp_path / "metrics.jsonl")
  # train/loss is the logged step's loss; train/loss_window the mean since the last log.
  logged = {r["step"]: r for r in records if "train/loss" in r}
  assert sorted(logged) == [4, 6]
  assert logged[4]["train/loss"] == pytest.approx(result.losses[3], rel=1e-6)
  assert logged[4]["train/loss_window"] == pytest.approx(np.mean(result.losses[:4]), rel=1e-6)
  assert logged[6]["train/loss_window"] == pytest.approx(np.mean(result.losses[4:]), rel=1e-6)
  assert any("test/ndcg@10" in r for r in records)
  assert "test/sampled20_ndcg@10" in result.metrics
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["3", "6"]


def test_loss_per_target_is_the_mean_loss_of_one_target(tmp_path):
  # SASRec's loss.normalize=mean divides by a constant; loss_per_target divides by the targets
  # actually in the batch, which is what normalize=batch divides by: step 1 (same parameters,
  # batch and dropout key) must agree, and the window mean is the mean of the logged steps.
  common = {"train.num_steps": 4, "train.log_every_steps": 2, "loss.name": "ce"}
  mean = _run(tiny_config(**common, **{"loss.normalize": "mean"}), tmp_path / "mean")
  per_batch = _run(tiny_config(**common, **{"loss.normalize": "batch"}), tmp_path / "batch")
  records = {r["step"]: r for r in read_jsonl(tmp_path / "mean" / "metrics.jsonl")
             if "train/loss" in r}
  batch_records = [r for r in read_jsonl(tmp_path / "batch" / "metrics.jsonl")
                   if "train/loss" in r]
  assert "train/loss_per_target" not in batch_records[0]  # there weight == targets
  assert records[2]["train/loss_per_target"] != pytest.approx(records[2]["train/loss"])
  assert mean.losses[0] != pytest.approx(per_batch.losses[0])
  step1 = _run(tiny_config(**{**common, "train.num_steps": 1, "train.log_every_steps": 1,
                              "loss.normalize": "mean"}), tmp_path / "one")
  first = [r for r in read_jsonl(tmp_path / "one" / "metrics.jsonl") if "train/loss" in r][0]
  assert first["train/loss_per_target"] == pytest.approx(per_batch.losses[0], rel=1e-5)
  assert step1.losses[0] == pytest.approx(mean.losses[0], rel=1e-6)
  assert "train/loss_per_target_window" in records[4]


@pytest.mark.parametrize("mesh", [dict(data=8), dict(data=2, fsdp=2, tensor=2), dict(fsdp=4)])
def test_sharded_training_matches_one_device(tmp_path, mesh):
  one = _run(tiny_config(), tmp_path / "one", devices=jax.devices()[:1])
  config = tiny_config()
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  config.mesh.update(mesh)
  n = int(np.prod(list(mesh.values())))
  many = _run(config, tmp_path / "many", devices=jax.devices()[:n])
  np.testing.assert_allclose(many.losses, one.losses, rtol=2e-5)
  for a, b in zip(params_of(one.train_state, True), params_of(many.train_state, True)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_matches_full_batch(tmp_path):
  base = tiny_config(**{"model.dropout": 0.0, "train.num_steps": 3})
  accum = tiny_config(**{"model.dropout": 0.0, "train.num_steps": 3,
                         "train.grad_accum_steps": 4})
  a = _run(base, tmp_path / "a", devices=jax.devices()[:1])
  b = _run(accum, tmp_path / "b", devices=jax.devices()[:1])
  np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)


def test_signal_on_a_checkpointed_step_stops_cleanly_and_resumes(tmp_path):
  # SIGTERM arrives while step 3's batch is read; step 3 is a checkpoint step, so the stop must
  # not save step 3 a second time.
  config = tiny_config(**{"train.num_steps": 6, "train.checkpoint_every_steps": 3})
  task = tiny_task(config)
  real_train_data = task.train_data

  def train_data(process_index, process_count):
    reads = []

    def signal_on_third(batch):
      reads.append(1)
      if len(reads) == 3:  # synchronous: config.data.num_threads = 0
        os.kill(os.getpid(), signal.SIGTERM)
      return batch
    return real_train_data(process_index, process_count).map(signal_on_third)

  task.train_data = train_data
  stopped = trainer.train_and_evaluate(config, task, str(tmp_path))
  assert stopped.stopped_by_signal and stopped.step == 3
  assert ckpt_lib.finished_steps(str(tmp_path / "checkpoints")) == [3]
  resumed = _run(config, tmp_path)
  full = _run(config, tmp_path / "full")
  assert stopped.losses + resumed.losses == full.losses


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  good = tiny_config(**{"train.num_steps": 3})
  _run(good, tmp_path)
  bad = tiny_config(**{"train.num_steps": 40, "optimizer.learning_rate": 1e30})
  with pytest.raises(trainer.NonFiniteLossError, match=r"at step \d+"):
    _run(bad, tmp_path)
  steps = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
  # Every checkpoint written is from before the loss went bad: resuming must give finite losses.
  resumed = _run(tiny_config(**{"train.num_steps": steps[-1] + 1}), tmp_path)
  assert np.isfinite(resumed.losses).all()


def test_corrupt_checkpoint_names_the_path(tmp_path):
  _run(tiny_config(**{"train.num_steps": 3}), tmp_path)
  step_dir = tmp_path / "checkpoints" / "3" / "state"
  damaged = 0
  for path in step_dir.rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"\x00garbage")
      damaged += 1
  assert damaged
  with pytest.raises(ckpt_lib.CheckpointError, match=str(tmp_path / "checkpoints" / "3")):
    _run(tiny_config(**{"train.num_steps": 6}), tmp_path)


def test_half_written_checkpoint_is_never_picked_up(tmp_path):
  _run(tiny_config(**{"train.num_steps": 3}), tmp_path)
  ckpts = tmp_path / "checkpoints"
  # What a save cut off mid-write leaves: Orbax's temporary directory for a later step.
  partial = ckpts / "5.orbax-checkpoint-tmp-1700000000000000"
  shutil.copytree(ckpts / "3", partial)
  (partial / "state" / "_METADATA").unlink(missing_ok=True)
  result = _run(tiny_config(**{"train.num_steps": 6}), tmp_path)
  assert result.losses and len(result.losses) == 3  # resumed from 3, not 5
  assert not partial.exists()


def test_best_metric_keeps_the_best_evaluated_checkpoint(tmp_path):
  config = tiny_config(**{"train.num_steps": 8, "train.eval_every_steps": 2,
                          "train.checkpoint_every_steps": 2, "train.max_checkpoints_to_keep": 2,
                          "train.best_metric": "sampled20_ndcg@10", "eval.max_users": 0})
  result = _run(config, tmp_path)
  records = read_jsonl(tmp_path / "metrics.jsonl")
  score = {r["step"]: r["valid/sampled20_ndcg@10"] for r in records
           if "valid/sampled20_ndcg@10" in r}
  kept = sorted(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
  best_two = sorted(sorted(score, key=lambda s: -score[s])[:2])
  assert kept == best_two
  assert result.metrics["best_step"] == max(score, key=lambda s: score[s])


def test_best_metric_reports_the_best_checkpoint(tmp_path):
  # best_mode="min" on a ranking metric makes an early, barely trained step the 'best', so the
  # reported figures must come from restoring that checkpoint, not from the final state.
  config = tiny_config(**{"train.num_steps": 8, "train.eval_every_steps": 2,
                          "train.checkpoint_every_steps": 2, "train.best_metric": "ndcg@10",
                          "train.best_mode": "min", "eval.max_users": 0})
  result = _run(config, tmp_path)
  records = read_jsonl(tmp_path / "metrics.jsonl")
  score = {r["step"]: r["valid/ndcg@10"] for r in records if "valid/ndcg@10" in r}
  best = min(score, key=lambda s: score[s])
  assert best != 8 and result.metrics["best_step"] == best
  assert result.metrics["valid/ndcg@10"] == pytest.approx(score[best], abs=1e-6)
  # 'test' is evaluated once, on the best checkpoint (never on the final state it replaces),
  # and logged at that checkpoint's step.
  (test_record,) = [r for r in records if "test/ndcg@10" in r]
  assert test_record["step"] == best
  assert result.metrics["test/ndcg@10"] == pytest.approx(test_record["test/ndcg@10"], abs=1e-6)
  # The same run stopped at the best step (training is deterministic) scores the same.
  config.train.num_steps, config.train.best_metric = best, ""
  alone = _run(config, tmp_path / "until_best")
  assert result.metrics["test/ndcg@10"] == pytest.approx(alone.metrics["test/ndcg@10"], abs=1e-6)


def test_best_metric_without_matching_eval_schedule_is_rejected(tmp_path):
  config = tiny_config(**{"train.best_metric": "ndcg@10", "train.eval_every_steps": 0})
  with pytest.raises(ValueError, match="eval_every_steps"):
    _run(config, tmp_path)


class ItemTableNorm:
  """A second evaluator: the Frobenius norm of the item embedding table."""

  name = "item_norm"

  def __init__(self, every_steps: int, key: str = "item_norm"):
    self.every_steps, self.key = every_steps, key

  def __call__(self, model, split, mesh):
    del split, mesh
    table = np.asarray(jax.device_get(model.item_table()), np.float64)
    return {self.key: float(np.sqrt(np.sum(table ** 2)))}


def test_evaluators_run_at_their_own_cadence(tmp_path):
  config = tiny_config(**{"train.num_steps": 6, "train.eval_every_steps": 2})
  task = tiny_task(config)
  task.evaluators = [*task.evaluators, ItemTableNorm(every_steps=3)]
  result = trainer.train_and_evaluate(config, task, str(tmp_path))
  valid = {r["step"]: r for r in read_jsonl(tmp_path / "metrics.jsonl")
           if any(k.startswith("valid/") for k in r)}
  assert sorted(valid) == [2, 3, 4, 6]
  assert "valid/ndcg@10" in valid[2] and "valid/item_norm" not in valid[2]
  assert "valid/item_norm" in valid[3] and "valid/ndcg@10" not in valid[3]
  assert "valid/ndcg@10" in valid[6] and "valid/item_norm" in valid[6]  # the final evaluation
  table = np.asarray(jax.device_get(result.train_state.model().item_table()), np.float64)
  assert result.metrics["test/item_norm"] == pytest.approx(np.sqrt(np.sum(table ** 2)))
  # The trained model, evaluated again: every evaluator when no step is given.
  mesh = shard_lib.make_mesh(config.mesh)
  with jax.set_mesh(mesh):
    again = trainer.evaluate(task, result.train_state.model(), "test", mesh)
  assert again["ndcg@10"] == pytest.approx(result.metrics["test/ndcg@10"], abs=1e-6)
  assert set(again) == {k[len("test/"):] for k in result.metrics if k.startswith("test/")} - {
      "eval_seconds"}


def test_two_evaluators_returning_one_metric_is_an_error(tmp_path):
  config = tiny_config()
  task = tiny_task(config)
  task.evaluators = [*task.evaluators, ItemTableNorm(every_steps=0, key="ndcg@10")]
  mesh = shard_lib.make_mesh(config.mesh, jax.devices()[:1])
  train_state = trainer.create_train_state(config, task, mesh)
  with jax.set_mesh(mesh), pytest.raises(ValueError, match=r"evaluators 'ranking' and "
                                                           r"'item_norm' both return"):
    trainer.evaluate(task, train_state.model(), "valid", mesh)


class FailingEvaluator:
  """An evaluator that fails at the final evaluation (as a killed or crashing one would)."""

  name, every_steps = "failing", 0

  def __call__(self, model, split, mesh):
    raise RuntimeError("evaluation failed")


def test_final_step_is_saved_before_the_final_evaluation(tmp_path, capsys):
  # Training that finished is never lost to an evaluation that did not: the rerun restores the
  # last step and goes straight to the evaluation.
  config = tiny_config(**{"train.num_steps": 5, "train.checkpoint_every_steps": 100})
  task = tiny_task(config)
  task.evaluators = [FailingEvaluator()]
  with pytest.raises(RuntimeError, match="evaluation failed"):
    trainer.train_and_evaluate(config, task, str(tmp_path))
  assert ckpt_lib.finished_steps(str(tmp_path / "checkpoints")) == [5]
  assert not (tmp_path / "results.json").exists()
  capsys.readouterr()
  result = _run(config, tmp_path)
  assert "training already complete at step 5; evaluating" in capsys.readouterr().out
  assert result.step == 5 and result.losses == [] and "test/ndcg@10" in result.metrics
  assert (tmp_path / "results.json").exists()
