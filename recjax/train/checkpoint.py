"""Orbax checkpoints of the train state together with the Grain iterator state.

Layout: `<workdir>/checkpoints/<step>/state` holds `nnx.state((model, optimizer))`, i.e. the
model's variables under "0" and the optimizer's under "1", each variable's array under
"value"; `<step>/data` holds one Grain iterator state per process.

Orbax writes each step into a temporary directory and renames it only once every process has
finished, so a checkpoint cut off mid-write is never listed; leftovers are deleted on start-up.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be read."""


def _resolve(directory: str) -> str:
  """An absolute local path, or a URL (gs://...) unchanged: Orbax opens both."""
  return directory if "://" in directory else os.path.abspath(directory)


def make_manager(directory: str, *, max_to_keep: int, async_save: bool,
                 best_metric: str | None = None, best_mode: str = "max") -> ocp.CheckpointManager:
  """A CheckpointManager over `directory` keeping `max_to_keep` steps (or the best ones).

  It deletes leftover temporary directories: only for the run's own workdir (another run's are
  read with `finished_steps` and `restore_model_arrays`).
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      cleanup_tmp_directories=True,
      enable_async_checkpointing=async_save,
      best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
      best_mode=best_mode,
      keep_checkpoints_without_metrics=True,
  )
  return ocp.CheckpointManager(_resolve(directory), options=options,
                               item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any,
         metrics: Mapping[str, float] | None = None, force: bool = False) -> bool:
  """Saves `state` and the iterator position after `step` steps (asynchronously if configured)."""
  args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                            data=grain.checkpoint.CheckpointSave(data_iterator))
  return manager.save(step, args=args, metrics=dict(metrics) if metrics else None, force=force)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
            data_iterator: Any | None) -> Any:
  """Restores the state at `step` onto the shardings of `abstract_state`; rewinds the iterator."""
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  path = os.path.join(str(manager.directory), str(step))
  try:
    restored = manager.restore(step, args=ocp.args.Composite(**items))
  except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
    raise CheckpointError(
        f"checkpoint {path} is corrupt or incompatible with this model ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:300]}). Delete that step directory to resume from an "
        f"earlier one, or start a fresh workdir.") from e
  logging.info("restored checkpoint %s", path)
  return restored["state"]


def finished_steps(directory: str) -> list[int]:
  """The steps of the finished checkpoints in `directory`, read-only (another run's may be live)."""
  return sorted(ocp.path.step.checkpoint_steps(_resolve(directory)))


def model_metadata(directory: str, step: int) -> dict[tuple[str, ...], tuple[tuple[int, ...], Any]]:
  """{variable path: (shape, dtype)} of the model's variables in the checkpoint at `step`."""
  path = os.path.join(_resolve(directory), str(step), "state")
  try:
    tree = ocp.StandardCheckpointHandler().metadata(epath.Path(path)).tree
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300] if str(e) else ''})") from e
  out = {}
  for keys, leaf in jax.tree_util.tree_flatten_with_path(tree.get("0", {}))[0]:
    names = tuple(str(getattr(k, "key", k)) for k in keys)
    if names and names[-1] == "value":
      out[names[:-1]] = (tuple(leaf.shape), leaf.dtype)
  return out


def restore_model_arrays(directory: str, step: int,
                         targets: Mapping[tuple[str, ...], jax.ShapeDtypeStruct]
                         ) -> dict[tuple[str, ...], jax.Array]:
  """Reads only the model variables at `targets`' paths from the checkpoint at `step`.

  Each array comes back with the shape, dtype and sharding of its target (an Orbax partial
  restore: the optimizer state and the other variables are not read).
  """
  path = os.path.join(_resolve(directory), str(step), "state")
  item: dict[str, Any] = {}
  for names, target in targets.items():
    node = item.setdefault("0", {})
    for name in names:
      node = node.setdefault(name, {})
    node["value"] = target
  try:
    restored = ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True))
  except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
    raise CheckpointError(
        f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: "
        f"{str(e).splitlines()[0][:300] if str(e) else ''})") from e
  out = {}
  for names in targets:
    node = restored["0"]
    for name in names:
      node = node[name]
    out[names] = node["value"]
  return out
