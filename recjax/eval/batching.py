"""Host evaluation batches -> device batches on the data-parallel sharding, for every task.

Evaluation runs every example on every process: each process builds the same host batches, and
`device_batches` pads each to one fixed number of rows (a multiple of the data-parallel device
count, so the batch splits evenly and the jitted evaluation compiles once per width) and places
it on the batch sharding; each process contributes the rows its devices hold. The real row count
comes with every batch, so callers drop the padded rows' outputs.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from recjax.train import sharding as shard_lib


def data_parallel_size(mesh: jax.sharding.Mesh) -> int:
  """Devices a batch is split over (the product of the mesh's batch axes)."""
  return int(np.prod([mesh.shape[a] for a in shard_lib.BATCH_AXES]))


def eval_batch_rows(batch_size: int, mesh: jax.sharding.Mesh) -> int:
  """`batch_size` rounded up to a multiple of the data-parallel device count."""
  if batch_size < 1:
    raise ValueError(f"config.eval.batch_size must be >= 1, got {batch_size}")
  n = data_parallel_size(mesh)
  return -(-int(batch_size) // n) * n


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """`x` with zero rows appended along axis 0 up to `rows`."""
  if len(x) > rows:
    raise ValueError(f"a batch of {len(x)} rows does not fit {rows}")
  return np.pad(x, [(0, rows - len(x))] + [(0, 0)] * (x.ndim - 1))


def replicated(tree, mesh: jax.sharding.Mesh | None):
  """Host arrays (or a pytree of them) placed whole on every device of `mesh` (None: as is)."""
  if mesh is None:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def to_host(tree):
  """numpy copies of a pytree of jax.Arrays, each whole on every process.

  An output sharded over devices of other processes (a decode's tokens follow the batch
  sharding of its cache) is gathered from them: a collective, so every process must call it,
  as every process runs every evaluation batch.
  """
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(one, tree)


def put(x: np.ndarray, mesh: jax.sharding.Mesh) -> jax.Array:
  """One global host array on the batch sharding (every process holds all of `x`)."""
  return jax.make_array_from_callback(x.shape, shard_lib.batch_sharding(mesh),
                                      lambda index: x[index])


def device_batches(host_batches: Iterable[Mapping[str, np.ndarray]], rows: int,
                   mesh: jax.sharding.Mesh) -> Iterator[tuple[dict[str, jax.Array], int]]:
  """Yields (device batch, number of real rows) for each host batch of at most `rows` rows.

  Every array of a host batch has the same leading (row) dimension; padded rows are zeros
  (item / token id 0 is padding everywhere in recjax). `rows` must be a multiple of the
  data-parallel device count (`eval_batch_rows`).
  """
  if rows % data_parallel_size(mesh):
    raise ValueError(f"{rows} rows do not split over {data_parallel_size(mesh)} data-parallel "
                     "devices; use eval_batch_rows")
  for batch in host_batches:
    sizes = {len(v) for v in batch.values()}
    if len(sizes) != 1:
      raise ValueError(f"arrays of one batch differ in rows: "
                       f"{ {k: len(v) for k, v in batch.items()} }")
    (n,) = sizes
    yield {k: put(pad_rows(np.asarray(v), rows), mesh) for k, v in batch.items()}, n
