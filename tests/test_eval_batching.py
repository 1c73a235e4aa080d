"""recjax.eval.batching: padded host batches placed on the data-parallel sharding."""
import jax
import numpy as np
import pytest

from recjax.eval import batching
from recjax.train import sharding as shard_lib


@pytest.fixture(scope="module")
def mesh():
  return shard_lib.make_mesh(dict(data=2, fsdp=2, tensor=2), jax.devices()[:8])


def test_rows_round_up_to_the_data_parallel_devices(mesh):
  assert batching.data_parallel_size(mesh) == 4
  assert [batching.eval_batch_rows(n, mesh) for n in (1, 4, 5, 9)] == [4, 4, 8, 12]
  with pytest.raises(ValueError, match="config.eval.batch_size must be >= 1"):
    batching.eval_batch_rows(0, mesh)


def test_device_batches_pad_place_and_count(mesh):
  rng = np.random.default_rng(0)
  host = [{"items": rng.integers(1, 9, size=(n, 3)), "targets": rng.integers(1, 9, size=n)}
          for n in (8, 3)]
  out = list(batching.device_batches(host, 8, mesh))
  assert [n for _, n in out] == [8, 3]
  for (batch, n), want in zip(out, host):
    for key, value in batch.items():
      assert value.shape[0] == 8
      assert value.sharding.is_equivalent_to(shard_lib.batch_sharding(mesh), value.ndim)
      got = np.asarray(value)
      np.testing.assert_array_equal(got[:n], want[key])
      assert not got[n:].any()  # padded rows are zeros (id 0 is padding)
  with pytest.raises(ValueError, match="differ in rows"):
    list(batching.device_batches([{"a": np.zeros(2), "b": np.zeros(3)}], 4, mesh))
  with pytest.raises(ValueError, match="do not split over 4"):
    list(batching.device_batches(host, 6, mesh))
  with pytest.raises(ValueError, match="does not fit 4"):
    list(batching.device_batches(host, 4, mesh))
