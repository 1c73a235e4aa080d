"""Semantic IDs of a catalogue's items by a trained quantiser: configs/semantic_ids.py:Q[,DATASET].

    RECJAX_DATA_DIR=../shared/data python -m recjax.main \
        --config=configs/semantic_ids.py:rqvae --workdir=/tmp/rqvae_games
    RECJAX_DATA_DIR=../shared/data python -m recjax.main \
        --config=configs/semantic_ids.py:sae --workdir=/tmp/sae_games

Q is `rqvae` (TIGER's RQ-VAE: 256-d item embeddings -> MLP [512, 256, 128] -> 32-d latent, 3
levels x 256 codes, commitment 0.25, k-means initialisation, dead-code restart) or `sae` (top-k
sparse autoencoder: 4096 latents, an item's code is its 8 most active latents in order, AuxK
against dead latents, one REC<latent> token vocabulary for every position).
DATASET (default amazon_games6k, 16,859 items) is any dataset of recjax.data.registry with item
text, or `synthetic` (no files needed). Item texts (`title; Brand; Categories`) are embedded by
TF-IDF + truncated SVD to 256-d (`--config.embed.method=wordllama` for wordllama;
`--config.embed.method=lm --config.embed.lm_path=DIR` for the mean-pooled final-layer hidden
states of a recjax lm/glm/calrec workdir or a local Hugging Face model directory, with
`embed.max_len` tokens per text and `embed.batch_size` texts per forward pass). Training: Adam
lr 1e-3, 1,024 items per step, 3,000 steps for rqvae (~180 epochs of amazon_games6k), 1,000
for sae.

Written into the workdir: semantic_ids.npz (`recjax.tasks.semantic_ids.load_semantic_ids(workdir)`)
and semantic_ids.txt (the report: collision rate before the collision level, per level
utilisation, perplexity and reconstruction error), besides the trainer's metrics and checkpoints.
The printed table has the same figures, with RQ-KMeans on the same embeddings as a baseline row
for rqvae. Expected on amazon_games6k (2 CPU cores; measured, docs/curriculum.md): see the
"RQ-VAE" and "Top-k sparse autoencoder" sections there for the figures and runtimes (sae on
a busy 2-core machine: about 8 minutes, collision rate 0.102, 59% of latents in some code).
"""
from recjax import config as config_lib

QUANTIZERS = ("rqvae", "sae")


def get_config(args: str = "rqvae"):
  quantizer, _, dataset = (a.strip() for a in args.partition(","))
  if quantizer not in QUANTIZERS:
    raise ValueError(f"configs/semantic_ids.py:{args}: the quantiser is one of {QUANTIZERS}")
  config = config_lib.base_config(quantizer)
  dataset = dataset or "amazon_games6k"
  config.data.dataset = dict(name=dataset)
  if dataset == "synthetic":
    config.data.dataset = dict(name="synthetic", num_users=500, num_items=1000, num_clusters=20,
                               seed=0)
  config.train.batch_size = 1024        # item rows per step (TIGER: 1024).
  # Optimizer steps: 3,000 (about 180 epochs of 16,859 items) for rqvae; 1,000 for sae, whose
  # 4096-latent steps cost ~7x more and whose loss flattens sooner.
  config.train.num_steps = 3000 if quantizer == "rqvae" else 1000
  config.train.log_every_steps = 100    # train metrics (loss, per-level utilisation/perplexity).
  config.train.eval_every_steps = 1000  # codes of the whole catalogue, written to the workdir.
  config.train.checkpoint_every_steps = 1000
  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b2 = 0.999           # Adam's default (the SASRec-tuned 0.98 is no reason here).
  return config
