"""Small SASRec experiments shared by the trainer tests (real data pipeline, real Orbax)."""
from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from recjax import config as config_lib
from recjax.data import splits
from recjax.data.synthetic import make_synthetic
from recjax.tasks.sasrec import SASRecTask


def tiny_config(**overrides):
  """A SASRec config that compiles and trains in seconds on CPU."""
  config = config_lib.base_config("sasrec")
  config.data.max_len = 8
  config.data.length_bucketing = False
  config.data.num_threads = 0
  config.model.hidden = 16
  config.model.dropout = 0.1
  config.train.batch_size = 32
  config.train.num_steps = 6
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 3
  config.train.progress_bar = False
  config.train.async_checkpointing = False
  config.eval.batch_size = 64
  config.eval.ks = (1, 10)
  config.eval.sampled_negatives = 20
  config.eval.max_users = 64
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    node[leaf] = value
  return config


_DATA = {}


def tiny_task(config) -> SASRecTask:
  if "data" not in _DATA:
    data = make_synthetic(num_users=256, num_items=64, num_clusters=4, seed=0)
    _DATA["data"] = (data, splits.leave_one_out(data))
  data, split = _DATA["data"]
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
