"""Quickstart: SASRec on recjax's built-in synthetic dataset (no download).

    python -m recjax.main --config=configs/quickstart.py --workdir=/tmp/recjax_quickstart

The data (2,000 users, 1,000 items) comes from `recjax.data.synthetic`: items belong to latent
clusters and users move between clusters by a peaked Markov chain, so the next item is
predictable from the last few while item popularity is nearly flat. Expected on 2 CPU cores:
about 1-2 minutes end to end (compilation included), test NDCG@10 of SASRec several times that
of the popularity baseline printed beneath it (see docs/benchmarks.md for the measured figures).
"""
from recjax import config as config_lib


def get_config():
  config = config_lib.base_config("sasrec")
  config.data.dataset = dict(name="synthetic", num_users=2000, num_items=1000, num_clusters=20,
                             seed=0)
  config.data.max_len = 50
  config.model.hidden = 64
  config.model.dropout = 0.2
  config.loss.name = "ce"           # full softmax: the strongest loss for full-catalogue ranking
  config.train.batch_size = 128
  config.train.num_epochs = 25
  config.train.log_every_steps = 25
  config.train.checkpoint_every_steps = 200
  config.optimizer.learning_rate = 2e-3
  return config
