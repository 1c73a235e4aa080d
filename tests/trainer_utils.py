"""Small SASRec experiments shared by the trainer tests (real data pipeline, real Orbax)."""
from __future__ import annotations

import importlib.util

import jax
import numpy as np
from flax import nnx

from recjax.data import registry, splits
from recjax.tasks.sasrec import SASRecTask
from tests.cli_utils import REPO


def smoke_config():
  """configs/smoke.py, the config the command-line tests run."""
  spec = importlib.util.spec_from_file_location("smoke", REPO / "configs" / "smoke.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def tiny_config(**overrides):
  """configs/smoke.py for in-process runs: synchronous, quiet, a few steps."""
  config = smoke_config()
  config.data.num_threads = 0
  config.model.dropout = 0.1
  config.train.num_steps = 6
  config.train.checkpoint_every_steps = 3
  config.train.progress_bar = False
  config.train.async_checkpointing = False
  config.eval.ks = (1, 10)
  config.eval.max_users = 64
  return apply_overrides(config, overrides)


def apply_overrides(config, overrides: dict):
  """Sets dotted keys ("train.num_steps") like --config.train.num_steps=... does."""
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    node[leaf] = value
  return config


_DATA = {}


def tiny_task(config) -> SASRecTask:
  key = str(config.data.dataset)
  if key not in _DATA:
    data = registry.load_dataset(config.data.dataset.to_dict())
    _DATA[key] = (data, splits.leave_one_out(data))
  data, split = _DATA[key]
  return SASRecTask(config, data, split)


def params_of(train_state, skip_key_bias: bool = False) -> list[np.ndarray]:
  """The model's parameters as host arrays, in a fixed order.

  The attention key bias has an exactly-zero gradient (softmax ignores a constant shift), so
  Adam turns rounding noise into lr-sized steps on it; `skip_key_bias` leaves it out when
  comparing runs whose reduction order differs.
  """
  flat = nnx.to_flat_state(nnx.state(train_state.model(), nnx.Param))
  return [np.asarray(jax.device_get(v.get_value())) for path, v in flat
          if not (skip_key_bias and path[-2:] == ("key", "bias"))]
