"""A seconds-long SASRec run on a small synthetic dataset, for checking an installation.

    python -m recjax.main --config=configs/smoke.py --workdir=/tmp/recjax_smoke

Expected: about 20 s on 2 CPU cores; it trains 20 steps, evaluates, checkpoints and prints the
results table. The tests use it for command-line, signal and multi-process runs.
"""
from recjax import config as config_lib


def get_config():
  config = config_lib.base_config("sasrec")
  config.data.dataset = dict(name="synthetic", num_users=256, num_items=64, num_clusters=4, seed=0)
  config.data.max_len = 8
  config.data.length_bucketing = False
  config.model.hidden = 16
  config.train.batch_size = 32
  config.train.num_steps = 20
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 10
  config.eval.batch_size = 64
  config.eval.sampled_negatives = 20
  return config
