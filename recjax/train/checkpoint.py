"""Orbax checkpoints of the train state together with the Grain iterator state.

Orbax writes each step into a temporary directory and renames it only once every process has
finished, so a checkpoint cut off mid-write is never listed; leftovers are deleted on start-up.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import grain
import orbax.checkpoint as ocp
from absl import logging


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be read."""


def make_manager(directory: str, *, max_to_keep: int, async_save: bool,
                 best_metric: str | None = None, best_mode: str = "max") -> ocp.CheckpointManager:
  """A CheckpointManager over `directory` keeping `max_to_keep` steps (or the best ones)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      create=True,
      cleanup_tmp_directories=True,
      enable_async_checkpointing=async_save,
      best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
      best_mode=best_mode,
      keep_checkpoints_without_metrics=True,
  )
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
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
