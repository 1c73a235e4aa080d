"""recjax.objectives.contrastive (in-batch InfoNCE) against a numpy reference, and sharded."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from recjax.objectives import contrastive
from recjax.train import sharding as shard_lib

RNG = np.random.default_rng(0)
Q = RNG.normal(size=(6, 5)).astype(np.float32)
K = RNG.normal(size=(6, 5)).astype(np.float32)
IDS = np.array([4, 7, 4, 9, 2, 7])  # items 4 and 7 each appear twice
VALID = np.array([True, True, True, True, False, True])  # row 4 is padding
T = 0.1


def _reference(q, k, ids, valid, temperature, bidirectional=True, cosine=True):
  """Loops over pairs: row i's negatives are the valid keys of other ids."""
  if cosine:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
  s = (q.astype(np.float64) @ k.T.astype(np.float64)) / temperature
  n = len(q)
  ids = np.arange(n) if ids is None else ids
  valid = np.ones(n, bool) if valid is None else valid
  total, correct = 0.0, 0
  for i in np.nonzero(valid)[0]:
    keep = [j for j in range(n) if valid[j] and (j == i or ids[j] != ids[i])]
    row = -(s[i, i] - np.log(np.sum(np.exp(s[i, keep]))))
    col = -(s[i, i] - np.log(np.sum(np.exp(s[keep, i]))))
    total += 0.5 * (row + col) if bidirectional else row
    correct += int(keep[int(np.argmax(s[i, keep]))] == i)
  return total, int(valid.sum()), correct


@pytest.mark.parametrize("bidirectional,cosine", [(True, True), (False, True), (True, False)])
def test_info_nce_matches_numpy(bidirectional, cosine):
  loss, weight, metrics = contrastive.info_nce(Q, K, temperature=T, ids=IDS, valid=VALID,
                                               bidirectional=bidirectional, cosine=cosine)
  want, count, correct = _reference(Q, K, IDS, VALID, T, bidirectional, cosine)
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(weight) == count == 5
  assert float(metrics["ncorrect"]) == correct


def test_a_duplicate_item_is_not_its_own_negative():
  # Rows 0 and 2 have the same target item with the same key embedding, and their queries
  # point at it: without id masking each is the other's negative and caps its probability.
  k = K.copy()
  k[2] = k[0]
  q = np.zeros_like(Q)
  q[0] = q[2] = k[0]
  q[[1, 3, 4, 5]] = -k[[1, 3, 4, 5]]  # the other queries look away from their keys
  masked = contrastive.info_nce(q, k, temperature=T, ids=IDS)
  unmasked = contrastive.info_nce(q, k, temperature=T)
  # Unmasked, rows 0 and 2 each pay about log 2 in both directions (two equal keys).
  assert float(unmasked[0]) - float(masked[0]) > 2 * np.log(2) * 0.9
  assert float(masked[0]) == pytest.approx(_reference(q, k, IDS, None, T)[0], rel=1e-5)
  # With the copy masked, rows 0 and 2 find their own key first.
  assert float(masked[2]["ncorrect"]) >= 2


def test_padded_rows_change_nothing_and_gradients_are_finite():
  base = contrastive.info_nce(Q, K, temperature=T, ids=IDS, valid=VALID)
  q, k = Q.copy(), K.copy()
  q[4], k[4] = 100.0, -3.0  # any finite values in the padded row
  other = contrastive.info_nce(q, k, temperature=T, ids=IDS, valid=VALID)
  assert float(other[0]) == pytest.approx(float(base[0]), rel=1e-6)
  zeros = np.where(VALID[:, None], Q, 0.0), np.where(VALID[:, None], K, 0.0)
  fn = lambda q, k, t: contrastive.info_nce(q, k, temperature=t, ids=IDS, valid=VALID)[0]
  grads = jax.grad(fn, argnums=(0, 1, 2))(jnp.asarray(zeros[0]), jnp.asarray(zeros[1]),
                                          jnp.float32(T))
  for g in grads:
    assert np.all(np.isfinite(g))
  assert np.all(np.asarray(grads[0])[4] == 0) and np.all(np.asarray(grads[1])[4] == 0)
  with pytest.raises(ValueError, match="must both be"):
    contrastive.info_nce(Q, K[:3], temperature=T)


def test_sharded_over_data_and_fsdp_equals_one_device():
  """Under jit the arrays are global: 8 devices see the same negatives as one."""
  rng = np.random.default_rng(1)
  q = rng.normal(size=(16, 8)).astype(np.float32)
  k = rng.normal(size=(16, 8)).astype(np.float32)
  ids = rng.integers(1, 6, size=16)  # many duplicates
  valid = np.arange(16) < 13
  fn = lambda q, k, ids, valid: contrastive.info_nce(q, k, temperature=0.07, ids=ids,
                                                     valid=valid)
  one = jax.jit(fn)(q, k, ids, valid)
  mesh = shard_lib.make_mesh(dict(data=2, fsdp=4), jax.devices()[:8])
  batch = shard_lib.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  put = lambda x: jax.device_put(x, batch)
  many = jax.jit(fn, in_shardings=(batch,) * 4, out_shardings=replicated)(
      put(q), put(k), put(ids), put(valid))
  assert len(put(q).sharding.device_set) == 8
  np.testing.assert_allclose(float(many[0]), float(one[0]), rtol=1e-6)
  assert float(many[1]) == float(one[1]) == 13
  assert float(many[2]["ncorrect"]) == float(one[2]["ncorrect"])
  want = _reference(q, k, ids, valid, 0.07)
  assert float(one[0]) == pytest.approx(want[0], rel=1e-5)
