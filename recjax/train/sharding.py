"""Device mesh and logical-axis sharding.

Parameters name their axes logically (`nnx.with_partitioning(init, ("vocab", "embed"))`); the
config's `logical_axis_rules` map each logical name to mesh axes, MaxText style:

    ("batch", ("data", "fsdp")), ("embed", "fsdp"), ("mlp", "tensor"), ("vocab", "tensor"), ...

A logical axis maps to the first rule whose mesh axes are all free (not used by another dimension
of the same array) and whose total size divides the dimension; otherwise it stays replicated, so
odd sizes (SASRec's hidden size 50 on 8 devices) never make sharding fail.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
# Batch dimension of every input: split over both data-parallel axes.
BATCH_AXES = ("data", "fsdp")

LogicalRules = Sequence[tuple[str, Any]]


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh; one axis may be -1 to take the remaining devices."""
  unknown = set(shape) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"config.mesh has unknown axes {sorted(unknown)}; valid axes: {MESH_AXES}")
  devices = list(jax.devices() if devices is None else devices)
  sizes = [int(shape.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(shape)}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"config.mesh {dict(shape)}: {len(devices)} devices are not divisible "
                       f"by the fixed axes' product {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"config.mesh {dict(shape)} needs {math.prod(sizes)} devices, "
                     f"but {len(devices)} are available")
  return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int],
                    rules: LogicalRules, mesh: Mesh) -> PartitionSpec:
  """Maps one array's logical axis names to a PartitionSpec over `mesh`."""
  used: set[str] = set()
  spec = []
  for name, dim in zip(logical_axes, shape):
    chosen = None
    for rule_name, mesh_axes in rules:
      if rule_name != name or mesh_axes is None:
        continue
      axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
      axes = tuple(a for a in axes if mesh.shape[a] > 1)
      size = math.prod(mesh.shape[a] for a in axes)
      if axes and not used.intersection(axes) and dim % size == 0:
        chosen = axes[0] if len(axes) == 1 else axes
        used.update(axes)
        break
    spec.append(chosen)
  return PartitionSpec(*spec)


def _logical_axes(variable: nnx.Variable) -> tuple[str | None, ...] | None:
  return variable.get_metadata().get("out_sharding")


def state_shardings(state: Any, mesh: Mesh, rules: LogicalRules) -> Any:
  """NamedShardings for an (abstract) nnx.State, from each Variable's logical axis names."""

  def sharding(x):
    value = x.get_value() if isinstance(x, nnx.Variable) else x
    axes = _logical_axes(x) if isinstance(x, nnx.Variable) else None
    shape = getattr(value, "shape", ())
    if not axes or len(axes) != len(shape):
      spec = PartitionSpec()
    else:
      spec = logical_to_spec(axes, shape, rules, mesh)
    sh = NamedSharding(mesh, spec)
    return x.replace(sh) if isinstance(x, nnx.Variable) else sh

  return jax.tree.map(sharding, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the data-parallel axes, the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's rows of a batch into global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local.items()}
