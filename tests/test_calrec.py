"""The calrec task through the shared trainer: CLI run, sharding, two stages, bad input, leakage."""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from recjax.eval import calrec as calrec_eval
from recjax.eval import ranking as ranking_eval
from recjax.tasks import build_task
from recjax.tasks.calrec import CALRecTask
from recjax.train import sharding as shard_lib
from recjax.train import trainer
from recjax.train.metrics_writer import read_jsonl
from tests.cli_utils import REPO, cli_overrides, config_file, run_main_env
from tests.datasets import require_data_dir

ONE = jax.devices()[:1]
# The shape every in-process test and the CLI test share (byte tokens, 2 layers x 32 wide).
TINY = {
    "data.dataset.num_users": 64, "data.dataset.num_items": 32, "data.dataset.num_clusters": 4,
    "text.seq_len": 160, "text.max_history_items": 2, "text.item_fields": "title",
    "calrec.window": 3, "lm.tokenizer_vocab_size": 0, "text.tokenizer": "byte",
    "model.overrides": dict(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=4,
                            head_dim=8, mlp_dim=64, scan_layers=False),
    "model.vocab_multiple": 64, "train.batch_size": 8, "train.log_every_steps": 1,
    "train.checkpoint_every_steps": 0, "train.progress_bar": False,
    "train.async_checkpointing": False, "optimizer.warmup_steps": 2,
    "eval.max_users": 8, "eval.batch_size": 8, "eval.num_generations": 2,
}


def tiny_config(**overrides):
  return config_file("calrec", "synthetic", {**TINY, "train.num_steps": 3,
                                             "eval.evaluators": "dense", **overrides})


def test_main_trains_and_reports_every_mode_next_to_popularity(tmp_path):
  workdir = tmp_path / "run"
  args = cli_overrides({**TINY, "train.num_steps": 12,
                         "eval.evaluators": "dense,bm25,constrained"})
  proc = subprocess.run([sys.executable, "-m", "recjax.main", "--config=configs/calrec.py",
                         f"--workdir={workdir}", *args], cwd=REPO, env=run_main_env(),
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  losses = [r["train/loss"] for r in read_jsonl(workdir / "metrics.jsonl") if "train/loss" in r]
  assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2
  results = json.loads((workdir / "results.json").read_text())
  for mode in ("dense", "bm25", "constrained"):
    for metric in ("recall@1", "recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10",
                   "ndcg@20", "mrr@20", "users_per_sec"):
      assert f"test/{mode}/{metric}" in results
    assert results[f"test/{mode}/users"] == 8
    assert 0 <= results[f"test/{mode}/recall@1"] <= results[f"test/{mode}/recall@20"] <= 1
  assert 0 <= results["test/bm25/exact_match"] <= 1 and 0 <= results["test/bm25/no_match"] <= 1
  assert "CALRec (test)" in proc.stdout and "Popularity (test)" in proc.stdout
  assert "bm25/recall@1" in proc.stdout and "CALRec pairs" in proc.stdout


def _loss_and_grads(config, task, devices):
  mesh = shard_lib.make_mesh(config.mesh, devices)
  state = trainer.create_train_state(config, task, mesh)
  batch = shard_lib.global_batch(next(iter(task.train_data(0, 1))), mesh)
  model = state.model()
  graphdef, params, rest = nnx.split(model, task.trainable, ...)

  @jax.jit
  def f(params, batch):
    def loss(p):
      total, count, metrics = task.loss(nnx.merge(graphdef, p, rest), batch, nnx.Rngs(0))
      return total / count, metrics
    return jax.value_and_grad(loss, has_aux=True)(params)

  with jax.set_mesh(mesh):
    (loss, metrics), grads = f(params, batch)
  return (float(loss), {k: float(v) for k, v in metrics.items()},
          [np.asarray(jax.device_get(g)) for g in jax.tree.leaves(grads)])


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  config = tiny_config()
  task = build_task(config, str(tmp_path_factory.mktemp("one")))
  return task, _loss_and_grads(config, task, ONE)


@pytest.mark.parametrize("mesh", [dict(data=8), dict(fsdp=8), dict(data=2, tensor=4)],
                         ids=["data", "fsdp", "tensor"])
def test_sharded_loss_and_gradients_match_one_device(one_device, mesh):
  task, (loss, metrics, grads) = one_device
  config = tiny_config()
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  config.mesh.update(mesh)
  task.config = config
  many_loss, many_metrics, many_grads = _loss_and_grads(config, task, jax.devices()[:8])
  # 8 rows over 8 devices: a per-device similarity matrix would give another loss entirely.
  assert metrics["tt"] > 0 and metrics["ut"] > 0
  np.testing.assert_allclose(many_loss, loss, rtol=2e-5)
  for key in metrics:
    np.testing.assert_allclose(many_metrics[key], metrics[key], rtol=2e-5, atol=1e-6)
  for a, b in zip(many_grads, grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_two_stages_chain_through_init_from(tmp_path, capsys):
  stage1 = tmp_path / "stage1"
  first = trainer.train_and_evaluate(tiny_config(), build_task(tiny_config(), str(stage1)),
                                     str(stage1), devices=ONE)
  # Stage 2 on another domain (another synthetic dataset), from stage 1's parameters.
  config = tiny_config(**{"init_from.path": str(stage1), "data.dataset.seed": 7,
                          "train.num_steps": 2})
  capsys.readouterr()
  task = build_task(config, str(tmp_path / "stage2"))
  mesh = shard_lib.make_mesh(config.mesh, ONE)
  fresh = trainer.create_train_state(config, task, mesh)
  step, differing = trainer.init_from_workdir(config, task, fresh, str(stage1))
  assert step == 3 and differing == []
  stage1_params = jax.tree.leaves(nnx.state(first.train_state.model(), nnx.Param))
  for a, b in zip(stage1_params, jax.tree.leaves(nnx.state(fresh.model(), nnx.Param))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  second = trainer.train_and_evaluate(config, task, str(tmp_path / "stage2"), devices=ONE)
  assert f"initialised the parameters from {stage1} at step 3" in capsys.readouterr().out
  assert second.step == 2 and "test/dense/recall@10" in second.metrics


def test_stage_from_another_architecture_is_refused_with_the_shapes(tmp_path):
  stage1 = tmp_path / "stage1"
  trainer.train_and_evaluate(tiny_config(**{"train.num_steps": 1}),
                             build_task(tiny_config(), str(stage1)), str(stage1), devices=ONE)
  wide = dict(TINY["model.overrides"], hidden_size=48, head_dim=12)
  config = tiny_config(**{"init_from.path": str(stage1), "model.overrides": wide})
  with pytest.raises(trainer.RestoreError, match="parameters with other shapes"):
    trainer.train_and_evaluate(config, build_task(config, str(tmp_path / "s2")),
                               str(tmp_path / "s2"), devices=ONE)


def test_calrec_starts_from_an_lm_workdir(tmp_path):
  """CPT -> CALRec: an lm workdir's parameters are CALRec's starting point (same backbone)."""
  from tests.test_lm import tiny_config as lm_config  # pylint: disable=g-import-not-at-top
  lm = lm_config(**{"train.num_steps": 1, "model.overrides": TINY["model.overrides"],
                    "text.seq_len": 160})
  lm_result = trainer.train_and_evaluate(lm, build_task(lm, str(tmp_path / "lm")),
                                         str(tmp_path / "lm"), devices=ONE)
  config = tiny_config(**{"init_from.path": str(tmp_path / "lm"), "train.num_steps": 1})
  task = build_task(config, str(tmp_path / "c"))
  state = trainer.create_train_state(config, task, shard_lib.make_mesh(config.mesh, ONE))
  trainer.init_from_workdir(config, task, state, str(tmp_path / "lm"))
  lm_params = jax.tree.leaves(nnx.state(lm_result.train_state.model(), nnx.Param))
  calrec_params = jax.tree.leaves(nnx.state(state.model(), nnx.Param))
  assert len(lm_params) == len(calrec_params)
  for a, b in zip(lm_params, calrec_params):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  trainer.train_and_evaluate(config, task, str(tmp_path / "c"), devices=ONE)


@pytest.mark.parametrize("override, message", [
    ({"text.item_fields": "description"}, r"dataset 'synthetic' has no item text in "
                                          r"config.text.item_fields='description'"),
    ({"text.seq_len": 60}, r"config.text.seq_len=60 cannot hold the CALRec template"),
    ({"calrec.template": "profile"}, r"config.calrec.template='profile'"),
    ({"calrec.user_tokens": "all"}, r"config.calrec.user_tokens='all'"),
    ({"calrec.w_nig": 0.0, "calrec.w_tt": 0.0, "calrec.w_ut": 0.0}, r"one > 0"),
    ({"eval.evaluators": "dense,ranking"}, r"unknown evaluator 'ranking'"),
])
def test_bad_input_is_named(tmp_path, override, message):
  with pytest.raises(ValueError, match=message):
    CALRecTask(tiny_config(**override), str(tmp_path))


def test_pairs_are_the_last_window_positions_and_one_item_sequences_give_none(tmp_path):
  config = tiny_config()
  task = CALRecTask(config, str(tmp_path))
  lengths = task.train_corpus.split.train.lengths
  assert len(task.train_corpus) == int(np.minimum(np.maximum(lengths - 1, 0), 3).sum())
  pairs = task.train_corpus
  row_lengths = lengths[pairs.rows]
  assert (pairs.positions >= np.maximum(row_lengths - 3, 1)).all()
  assert (pairs.positions < row_lengths).all()
  assert not np.isin(np.flatnonzero(lengths < 2), pairs.rows).any()


def _domain(popularity):
  n = len(popularity) - 1
  return calrec_eval.Domain(prefix="", texts=[""] + [f"item {i}" for i in range(1, n + 1)],
                            item_rows=[], item_masks=[], popularity=np.asarray(popularity, float),
                            users=None)


@pytest.mark.parametrize("exclude", [False, True])
def test_generations_matching_nothing_fall_back_to_popularity(exclude):
  domain = _domain([0, 5, 1, 9, 8, 0, 3])
  users = calrec_eval.EvalUsers(prompts=[], user_masks=[], targets=np.array([2, 4, 6, 1]),
                                histories=[np.array([3]), np.array([1, 6]), np.array([5]),
                                           np.array([1])], users_total=4)
  evaluator = calrec_eval.DenseEvaluator(domains=lambda: [domain], ks=(1,),
                                         exclude_history=exclude, batch_size=1, layer=True)
  empty = np.zeros((4, 3, 5), np.int64)  # 3 generations x 5 slots, BM25 retrieved nothing
  ranks = evaluator._merged(empty, np.zeros((4, 3)), domain, users, exclude)
  np.testing.assert_array_equal(ranks, calrec_eval.popularity_ranks(domain.popularity, users,
                                                                    exclude))
  if exclude:
    assert ranks[3] == calrec_eval.MISS  # the target is in the history
  # Popularity order: 3, 4, 1, 6, 2, 5.
  if not exclude:
    assert ranks.tolist() == [4, 1, 3, 2]


def test_retrieved_items_come_first_in_round_robin_order():
  domain = _domain([0, 5, 1, 9, 9, 0, 3])
  users = calrec_eval.EvalUsers(prompts=[], user_masks=[], targets=np.array([6, 2]),
                                histories=[np.array([1]), np.array([1])], users_total=2)
  evaluator = calrec_eval.DenseEvaluator(domains=lambda: [domain], ks=(1,),
                                         exclude_history=True, batch_size=1, layer=True)
  lists = np.array([[[5, 1, 0], [6, 2, 0]], [[1, 2, 0], [0, 0, 0]]])
  # User 0: list 1 (score 0.9) first: 6, then 5; round 2: 2 (1 excluded). Target 6 -> rank 0.
  # User 1: 1 is excluded, so 2 is first.
  ranks = evaluator._merged(lists, np.array([[0.1, 0.9], [0.0, 0.0]]), domain, users, True)
  assert ranks.tolist() == [0, 0]


def test_no_validation_or_test_target_reaches_training_pairs_real_office(tmp_path):
  root = require_data_dir("amazon_office")
  config = tiny_config(**{"data.dataset": dict(name="amazon_office"), "data.root": str(root),
                          "calrec.window": 0, "text.seq_len": 512,
                          "text.item_max_chars": 60})
  task = CALRecTask(config, str(tmp_path))
  pairs, split = task.train_corpus, task.train_corpus.split
  data = task.train_corpus.data
  train_row = {int(u): r for r, u in enumerate(split.train_users)}
  # Every pair's next item is a training position; the training prefix ends before the
  # validation target (leave-one-out: the last two items are held out).
  lengths = split.train.lengths
  assert (pairs.positions < lengths[pairs.rows]).all() and (pairs.positions >= 1).all()
  full = data.sequences.lengths[split.train_users[pairs.rows]]
  evaluated = np.isin(split.train_users[pairs.rows], split.valid.users)
  assert (pairs.positions[evaluated] <= full[evaluated] - 3).all()
  held_out = {}
  for eval_set in (split.valid, split.test):
    for u, t, h in zip(eval_set.users, eval_set.targets, eval_set.histories):
      held_out.setdefault(int(u), []).append((int(t), len(h)))
  rng = np.random.default_rng(0)
  for i in rng.choice(len(pairs), 400, replace=False):
    doc = pairs[int(i)]
    user = doc.meta["user"]
    seq = split.train[train_row[user]]
    pos = int(pairs.positions[i])
    items = [s.item for s in doc.spans if s.kind == "item"]
    assert items[-1] == doc.meta["target_item"] == int(seq[pos])
    assert set(items[:-1]) <= set(seq[:pos].tolist())
    for target, at in held_out.get(user, []):
      # The held-out interaction (position `at` of the full sequence) is never rendered; the
      # same item may appear earlier in the prefix only if the user bought it before.
      assert pos < at
  # Evaluation prompts: the history only, never the held-out target's text as the answer.
  users = task._eval_domains()[0].users("valid")
  assert len(users) == 8
  for prompt, target in zip(users.prompts, users.targets):
    assert task.tokenizer.decode(prompt, skip_special=True).endswith("The next item the user "
                                                                     "bought:\n")
    assert int(target) in split.valid.targets


def test_a_mixture_keeps_domains_apart(tmp_path):
  """Stage 1's mixture: pairs of every domain, duplicates told apart by domain, per-domain
  evaluation prefixes."""
  spec = dict(name="synthetic", num_users=48, num_items=24, num_clusters=3)
  config = tiny_config(**{"text.mixture": [
      dict(dataset=dict(spec, seed=0), rate=1.0, tag="Shop A"),
      dict(dataset=dict(spec, seed=5), rate=1.0, tag="Shop B")]})
  task = CALRecTask(config, str(tmp_path))
  assert [d.name for d in task.train_corpus.domains] == ["Shop A", "Shop B"]
  assert task.id_stride == 25
  it = iter(task.train_data(0, 1))
  batch = next(it)
  for _ in range(5):
    batch = {k: np.concatenate([batch[k], v]) for k, v in next(it).items()}
  domains = batch["pair_id"] // 25
  assert set(domains.tolist()) == {0, 1} and (batch["pair_id"] % 25 >= 1).all()
  assert [d.prefix for d in task._eval_domains()] == ["shop_a/", "shop_b/"]
  assert "dense/shop_b/recall@10" in task.table_columns
  only_b = CALRecTask(tiny_config(**{"text.mixture": config.text.mixture,
                                     "eval.domains": "Shop B"}), str(tmp_path / "b"))
  assert [d.prefix for d in only_b._eval_domains()] == ["shop_b/"]
  assert only_b.table_columns == [c for c in task.table_columns if "/shop_b/" in c]
  with pytest.raises(ValueError, match=r"eval.domains: \['Shop C'\] is not a domain"):
    CALRecTask(tiny_config(**{"text.mixture": config.text.mixture,
                              "eval.domains": "Shop C"}), str(tmp_path / "c"))._eval_domains()


@pytest.mark.parametrize("split_name", ["valid", "test"])
def test_evaluated_users_are_sasrecs(tmp_path, split_name):
  """With the same seed and eval.max_users, CALRec and SASRec evaluate the same users: the same
  targets and histories, in the same order."""
  config = tiny_config(**{"eval.max_users": 11, "seed": 3})
  task = CALRecTask(config, str(tmp_path))
  users = task._eval_domains()[0].users(split_name)
  sasrec_users = ranking_eval.split_eval_set(task.train_corpus.split, split_name, 11, 3)
  assert len(users) == len(sasrec_users) == 11
  np.testing.assert_array_equal(users.targets, sasrec_users.targets)
  for mine, theirs in zip(users.histories, sasrec_users.histories):
    np.testing.assert_array_equal(mine, np.unique(theirs))


def test_evaluators_on_eight_devices_match_one(tmp_path):
  """Every mode runs on a sharded model; the deterministic ones give one device's figures."""
  config = tiny_config(**{"eval.evaluators": "dense,bm25,constrained", "eval.max_users": 6})
  task = build_task(config, str(tmp_path))
  out = {}
  for name, devices, mesh in (("one", ONE, dict(data=1, fsdp=1, tensor=1)),
                              ("many", jax.devices()[:8], dict(data=2, fsdp=2, tensor=2))):
    config.mesh.update(mesh)
    mesh = shard_lib.make_mesh(config.mesh, devices)
    state = trainer.create_train_state(config, task, mesh)
    with jax.set_mesh(mesh):
      out[name] = trainer.evaluate(task, state.model(), "test", mesh)
  for key, value in out["one"].items():
    if key.startswith(("dense/", "constrained/")) and not key.endswith("users_per_sec"):
      assert out["many"][key] == pytest.approx(value, abs=1e-6), key
  assert out["many"]["bm25/users"] == 6


def test_history_kept_also_reports_the_ranking_with_history_removed(tmp_path):
  """`no_history/` of an evaluation that keeps history items is the evaluation that removes
  them, from the same scores and beams (one model, one pass)."""
  results = {}
  for exclude in (False, True):
    config = tiny_config(**{"eval.evaluators": "dense,constrained", "eval.max_users": 16,
                            "eval.exclude_history": exclude})
    task = build_task(config, str(tmp_path / str(exclude)))
    mesh = shard_lib.make_mesh(config.mesh, ONE)
    state = trainer.create_train_state(config, task, mesh)
    with jax.set_mesh(mesh):
      results[exclude] = trainer.evaluate(task, state.model(), "test", mesh)
  for mode in ("dense", "constrained"):
    for metric in ("recall@1", "recall@10", "ndcg@10", "mrr@20"):
      assert results[False][f"{mode}/no_history/{metric}"] == pytest.approx(
          results[True][f"{mode}/{metric}"]), (mode, metric)
    assert not any(k.startswith(f"{mode}/no_history/") for k in results[True])
  # The synthetic histories hold test targets for some users: removing history changes ranks.
  assert any(results[False][f"dense/{m}"] != results[False][f"dense/no_history/{m}"]
             for m in ("recall@10", "ndcg@10", "mrr@20"))


def test_generated_ids_past_the_tokenizer_are_dropped(tmp_path):
  from recjax.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  model = tmp_path / "sp.model"
  tokenizer_lib.train_sentencepiece([f"misty heron mug {i} icy meadow box" for i in range(200)],
                                    model, 300, seed=0)
  task = CALRecTask(tiny_config(**{"text.tokenizer": str(model)}), str(tmp_path))
  vocab = task.tokenizer.vocab_size
  assert task.model_config.vocab_size > vocab  # rounded up to model.vocab_multiple
  ids = task.tokenizer.encode("misty heron").ids.tolist()
  with pytest.raises(IndexError):
    task.tokenizer.decode(ids + [vocab + 3])
  assert task._decode(ids + [vocab + 3]) == "misty heron"
