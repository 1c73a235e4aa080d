"""recjax.objectives.ranking against numpy references on hand-made scores."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.objectives import ranking

RNG = np.random.default_rng(0)
POS = RNG.normal(size=(2, 3)).astype(np.float32)
NEG = RNG.normal(size=(2, 3, 4)).astype(np.float32)
VALID = np.array([[False, True, True], [True, True, True]])  # position (0, 0) is padding
# Negative ids: 0 = an empty slot (the user had no unseen item left); row (1, 2) has none at all.
NEG_IDS = np.array([[[3, 4, 5, 6], [7, 0, 2, 9], [1, 2, 3, 4]],
                    [[5, 6, 7, 8], [0, 0, 3, 4], [0, 0, 0, 0]]])


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def _reference(name, pos, neg, valid, ids, beta=1.0):
  total = 0.0
  for b, t in zip(*np.nonzero(valid)):
    negs = neg[b, t][ids[b, t] > 0]
    if name == "bce":
      total += -beta * _log_sigmoid(pos[b, t]) - np.sum(_log_sigmoid(-negs))
    else:  # sampled softmax
      logits = np.concatenate([[pos[b, t]], negs]).astype(np.float64)
      total += -(logits[0] - np.log(np.sum(np.exp(logits))))
  return total


def test_bce_gbce_and_sampled_softmax_mask_empty_negatives():
  mask = NEG_IDS > 0
  loss, weight, metrics = ranking.bce(POS, NEG, VALID, mask)
  assert float(loss) == pytest.approx(_reference("bce", POS, NEG, VALID, NEG_IDS), rel=1e-5)
  assert float(weight) == VALID.sum() and metrics == {}
  loss, _, _ = ranking.sampled_softmax(POS, NEG, VALID, mask)
  assert float(loss) == pytest.approx(_reference("softmax", POS, NEG, VALID, NEG_IDS), rel=1e-5)
  # gSASRec's beta by hand: alpha = 4 / (9 - 1) = 0.5, beta = 0.5 * (0.5 * (1 - 2) + 2) = 0.75.
  assert ranking.gbce_beta(4, 9, 0.5) == pytest.approx(0.75)
  loss, _, _ = ranking.gbce(POS, NEG, VALID, mask, num_items=9, t=0.5)
  assert float(loss) == pytest.approx(
      _reference("bce", POS, NEG, VALID, NEG_IDS, beta=0.75), rel=1e-5)
  plain = ranking.bce(POS, NEG, VALID, mask)[0]
  assert float(ranking.gbce(POS, NEG, VALID, mask, num_items=9, t=0.0)[0]) == pytest.approx(
      float(plain), rel=1e-6)
  # The mask matters (the test can fail): without it, empty slots count as negatives.
  assert abs(float(ranking.bce(POS, NEG, VALID)[0]) - float(plain)) > 1e-3


@pytest.mark.parametrize("name", ["bce", "sampled_softmax"])
def test_masked_negatives_and_padding_give_finite_zero_gradients(name):
  mask = NEG_IDS > 0
  # Whatever an empty slot (even inf) or a padding position (any finite score) scores,
  # nothing leaks into the loss or the gradients.
  neg = np.where(mask, NEG, np.inf).astype(np.float32)
  pos = np.where(VALID, POS, 1e30).astype(np.float32)
  fn = getattr(ranking, name)
  loss_fn = lambda p, n: fn(p, n, VALID, mask)[0]
  loss = loss_fn(pos, neg)
  assert float(loss) == pytest.approx(float(fn(POS, NEG, VALID, mask)[0]), rel=1e-6)
  g_pos, g_neg = jax.grad(loss_fn, argnums=(0, 1))(jnp.asarray(pos), jnp.asarray(neg))
  assert np.all(np.isfinite(g_pos)) and np.all(np.isfinite(g_neg))
  assert np.all(np.asarray(g_neg)[~mask] == 0) and np.all(np.asarray(g_pos)[~VALID] == 0)
  # A position whose every slot is empty: sampled softmax has nothing to beat (loss 0).
  if name == "sampled_softmax":
    only = np.zeros_like(VALID)
    only[1, 2] = True
    assert float(fn(POS, NEG, only, mask)[0]) == 0.0


def test_softmax_ce_matches_numpy_and_ignores_the_padding_column():
  logits = RNG.normal(size=(2, 3, 6)).astype(np.float32)
  targets = np.array([[0, 2, 5], [1, 3, 3]])  # (0, 0) is padding: target 0
  loss, weight, _ = ranking.softmax_ce(logits, targets, VALID)
  want = 0.0
  for b, t in zip(*np.nonzero(VALID)):
    row = logits[b, t, 1:].astype(np.float64)  # column 0, the padding item, is no class
    want += np.log(np.sum(np.exp(row))) - logits[b, t, targets[b, t]]
  assert float(loss) == pytest.approx(want, rel=1e-5) and float(weight) == VALID.sum()
  grad = jax.grad(lambda x: ranking.softmax_ce(x, targets, VALID)[0])(jnp.asarray(logits))
  assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[..., 0] == 0)
  assert np.all(np.asarray(grad)[~VALID] == 0)
