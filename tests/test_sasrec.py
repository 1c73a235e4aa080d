"""SASRec model, losses and ranking metrics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recjax.eval import metrics
from recjax.models.sasrec import SASRec, SASRecConfig
from recjax.train import trainer
from tests.trainer_utils import tiny_config, tiny_task


def _randomize_biases(model: SASRec, seed: int = 1) -> None:
  """Biases start at zero; random ones make padding keys/values (= biases) matter."""
  rng = np.random.default_rng(seed)
  for block in model.blocks:
    for dense in (block.query, block.key, block.value, block.out):
      dense.bias[...] = jnp.asarray(rng.normal(0, 0.5, dense.bias.shape), jnp.float32)


@pytest.mark.parametrize("norm,attend_to_padding",
                         [(n, a) for n in ("pre", "pre_ln", "post") for a in (False, True)])
def test_trimmed_batch_equals_full_width(norm, attend_to_padding):
  model = SASRec(SASRecConfig(num_items=30, max_len=16, hidden=8, num_heads=2, norm=norm,
                              attend_to_padding=attend_to_padding), nnx.Rngs(0))
  _randomize_biases(model)
  model.eval()
  rng = np.random.default_rng(0)
  full = np.zeros((3, 16), np.int32)
  for r, n in enumerate([2, 5, 7]):
    full[r, 16 - n:] = rng.integers(1, 31, n)
  trimmed = full[:, -8:]
  np.testing.assert_allclose(model(jnp.asarray(full))[:, -8:], model(jnp.asarray(trimmed)),
                             rtol=1e-5, atol=1e-5)


def _reference_forward(model: SASRec, items: np.ndarray) -> jax.Array:
  """SASRec.pytorch's forward at full width: causal-only mask, so pads are attended to."""
  cfg = model.cfg
  b, t = items.shape
  valid = jnp.asarray(items > 0)[..., None]
  positions = np.where(items > 0, np.arange(1, t + 1), 0)
  x = model.item_embedding(jnp.asarray(items)) * cfg.hidden ** 0.5
  x = (x + model.position_embedding(jnp.asarray(positions))) * valid
  causal = jnp.tril(jnp.ones((t, t), bool))
  h, dh = cfg.num_heads, cfg.hidden // cfg.num_heads
  for block in model.blocks:
    q_in = block.attn_norm(x)
    kv_in = x if cfg.norm == "pre" else q_in  # pre_ln: --norm_first
    q, k, v = (f(z).reshape(b, t, h, dh) for f, z in
               ((block.query, q_in), (block.key, kv_in), (block.value, kv_in)))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh)
    weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
    attn = block.out(jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, -1))
    if cfg.norm == "pre":
      x = q_in + attn
      y = block.ffn_norm(x)
      x = (y + block.ffn(y, None)) * valid
    else:
      x = x + attn
      x = (x + block.ffn(block.ffn_norm(x), None)) * valid
  return model.final_norm(x)


@pytest.mark.parametrize("norm", ["pre", "pre_ln"])
def test_attend_to_padding_is_the_reference_model(norm):
  cfg = SASRecConfig(num_items=30, max_len=16, hidden=8, num_heads=2, norm=norm,
                     attend_to_padding=True)
  model = SASRec(cfg, nnx.Rngs(0))
  _randomize_biases(model)
  model.eval()
  items = np.zeros((3, 16), np.int32)
  rng = np.random.default_rng(0)
  for r, n in enumerate([2, 5, 16]):  # the last row has no padding at all
    items[r, 16 - n:] = rng.integers(1, 31, n)
  expected = _reference_forward(model, items)
  got = model(jnp.asarray(items))
  valid = items > 0
  np.testing.assert_allclose(np.asarray(got)[valid], np.asarray(expected)[valid],
                             rtol=1e-5, atol=1e-5)
  # Masking the pads instead is a different model (the test can fail).
  masked = SASRec(SASRecConfig(**{**cfg.__dict__, "attend_to_padding": False}), nnx.Rngs(0))
  _randomize_biases(masked)
  masked.eval()
  assert not np.allclose(np.asarray(masked(jnp.asarray(items)))[valid],
                         np.asarray(expected)[valid], atol=1e-3)


def test_causal_a_later_item_does_not_change_earlier_states():
  model = SASRec(SASRecConfig(num_items=30, max_len=8, hidden=8), nnx.Rngs(0))
  model.eval()
  a = jnp.asarray([[0, 0, 3, 4, 5, 6, 7, 8]])
  b = a.at[0, -1].set(9)
  np.testing.assert_allclose(model(a)[:, :-1], model(b)[:, :-1], atol=1e-6)
  assert not np.allclose(model(a)[:, -1], model(b)[:, -1])


def test_gbce_with_t0_is_bce_and_every_loss_is_finite():
  losses = {}
  for name, extra in [("bce", {}), ("gbce", {"loss.gbce_t": 0.0}), ("sampled_softmax", {}),
                      ("ce", {})]:
    config = tiny_config(**{"loss.name": name, "loss.num_negatives": 4, **extra})
    task = tiny_task(config)
    model = task.build_model(nnx.Rngs(0))
    model.eval()
    batch = next(iter(task.train_data(0, 1)))
    loss_sum, weight, _ = task.loss(model, {k: jnp.asarray(v) for k, v in batch.items()},
                                    nnx.Rngs(0))
    losses[name] = float(loss_sum / weight)
    assert np.isfinite(losses[name]) and float(weight) > 0
  assert losses["gbce"] == pytest.approx(losses["bce"], rel=1e-6)


@pytest.mark.parametrize("name", ["bce", "sampled_softmax"])
def test_an_empty_negative_slot_counts_as_no_negative(name):
  """sample_negatives gives id 0 where a user has no unseen item left: the loss must equal the
  loss without that slot."""
  task = tiny_task(tiny_config(**{"loss.name": name, "loss.num_negatives": 3}))
  model = task.build_model(nnx.Rngs(0))
  model.eval()
  batch = {k: jnp.asarray(v) for k, v in next(iter(task.train_data(0, 1))).items()}
  emptied = dict(batch, negatives=batch["negatives"].at[..., -1].set(0))
  fewer = dict(batch, negatives=batch["negatives"][..., :-1])
  loss = lambda b: float(task.loss(model, b, nnx.Rngs(0))[0])
  assert loss(emptied) == pytest.approx(loss(fewer), rel=1e-6)
  assert abs(loss(batch) - loss(fewer)) > 1e-3  # the slot mattered before it was emptied


def test_loss_normalize_mean_weighs_every_position_alike():
  """'batch' divides by each batch's positions; 'mean' by one constant for every batch, which
  over an epoch equals the positions it trains on (up to the users an epoch leaves out)."""
  weights = {}
  for normalize in ("batch", "mean"):
    task = tiny_task(tiny_config(**{"loss.normalize": normalize}))
    model = task.build_model(nnx.Rngs(0))
    model.eval()
    epoch = [b for _, b in zip(range(task.steps_per_epoch), task.train_data(0, 1))]
    weights[normalize] = [float(task.loss(model, {k: jnp.asarray(v) for k, v in b.items()},
                                          nnx.Rngs(0))[1]) for b in epoch]
    positions = [int((b["targets"] > 0).sum()) for b in epoch]
  assert weights["batch"] == positions
  assert len(set(positions)) > 1  # length bucketing: batches differ in their positions
  assert len(set(weights["mean"])) == 1
  assert sum(weights["mean"]) == pytest.approx(sum(positions), rel=0.15)
  bad = tiny_config(**{"loss.normalize": "sum"})
  with pytest.raises(ValueError, match="loss.normalize='sum'"):
    tiny_task(bad)


def test_ranking_metrics_by_hand():
  scores = jnp.asarray([[0.1, 0.9, 0.5, 0.3], [0.4, 0.4, 0.4, 0.4], [0.0, 0.2, 0.1, 0.3]])
  ranks = np.asarray(metrics.target_ranks(scores, jnp.asarray([2, 0, 3])))
  np.testing.assert_array_equal(ranks, [1, 3, 0])  # ties count against the target
  m = metrics.ranking_metrics(ranks, ks=(1, 2))
  assert m["recall@1"] == pytest.approx(1 / 3)
  assert m["recall@2"] == pytest.approx(2 / 3)
  assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) + 1) / 3)
  assert m["mrr@2"] == pytest.approx((0.5 + 1) / 3)


def test_exclude_history_removes_seen_items_from_the_ranking():
  config = tiny_config(**{"eval.exclude_history": True, "eval.sampled_negatives": 0})
  task = tiny_task(config)
  model = task.build_model(nnx.Rngs(0))
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
                           ("data", "fsdp", "tensor"))
  with_history = trainer.evaluate(task, model, "test", mesh)
  plain = tiny_task(tiny_config(**{"eval.sampled_negatives": 0}))
  without = trainer.evaluate(plain, model, "test", mesh)
  assert with_history["recall@10"] != without["recall@10"]
  assert with_history["users"] == without["users"] == 64  # eval.max_users
  assert with_history["users_total"] == task.data.num_users
  pop = task.baselines("test")["Popularity"]
  assert 0 <= pop["recall@10"] <= 1
  assert pop != plain.baselines("test")["Popularity"]


def test_evaluate_matches_a_per_user_numpy_ranking():
  config = tiny_config(**{"eval.exclude_history": True, "eval.sampled_negatives": 0,
                          "eval.batch_size": 16})
  task = tiny_task(config)
  model = task.build_model(nnx.Rngs(3))
  model.eval()
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:2]).reshape(2, 1, 1),
                           ("data", "fsdp", "tensor"))
  got = trainer.evaluate(task, model, "test", mesh)
  eval_set = task._eval_set("test")  # pylint: disable=protected-access
  table = np.asarray(model.item_table())
  ranks = []
  for history, target in zip(eval_set.histories, eval_set.targets):
    items = np.zeros(config.data.max_len, np.int32)
    tail = history[-config.data.max_len:]
    items[len(items) - len(tail):] = tail
    user = np.asarray(model(jnp.asarray(items[None])))[0, -1]
    scores = table @ user
    scores[0] = -np.inf
    if target in history:
      ranks.append(len(scores))
      continue
    scores[np.unique(history)] = -np.inf
    ranks.append(int(np.sum(scores > scores[target]) + np.sum(scores == scores[target]) - 1))
  want = metrics.ranking_metrics(np.asarray(ranks), config.eval.ks)
  for key in want:
    assert got[key] == pytest.approx(want[key], abs=1e-9), key
