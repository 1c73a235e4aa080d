"""CALRec (two-tower contrastive + next-item generation, two stages): configs/calrec.py:ARGS.

The whole chain in one command (continual pre-training -> stage 1 -> stage 2, each evaluated at
its end; re-running skips finished steps and resumes an interrupted one; recjax/chain.py):

    python -m recjax.chain --config=configs/calrec.py:amazon_office --workdir=/tmp/calrec_office
    python -m recjax.chain --config=configs/calrec.py:synthetic --workdir=/tmp/calrec_chain

`get_chain(TARGET)` below lists the steps. ARGS of one step is `synthetic` (default),
`cpt[,TARGET]`, `stage1[,TARGET]` or `stage2,TARGET`:

    # One run on synthetic data (no download):
    python -m recjax.main --config=configs/calrec.py --workdir=/tmp/calrec_synthetic

    # Real data (RECJAX_DATA_DIR=../shared/data), each step a resumable workdir.
    # Stage 1: the multi-domain mixture (MIXTURE below), the domain named in the template:
    python -m recjax.main --config=configs/calrec.py:stage1,amazon_office \
        --workdir=/tmp/calrec_s1
    # Stage 2: the target domain, from stage 1's parameters (optimizer and data order fresh):
    python -m recjax.main --config=configs/calrec.py:stage2,amazon_office \
        --workdir=/tmp/calrec_s2 --config.init_from.path=/tmp/calrec_s1 \
        --config.text.tokenizer=/tmp/calrec_s1/tokenizer.model --config.lm.tokenizer_vocab_size=0

Stage 2 must use stage 1's tokenizer (each stage would otherwise train an 8,000-piece
SentencePiece model from its own training text): hence the two tokenizer overrides above.
A stage may also start from continual pre-training (a configs/lm.py workdir on the same
backbone): `--config.init_from.path=<lm workdir>` and that run's `tokenizer.model`.
Re-running a command resumes its workdir; a finished one is only evaluated again.

`synthetic`: recjax's synthetic dataset (600 users, 300 items, titles naming their cluster), a
512-piece tokenizer, `tiny_llama` 4 x 128 (about 1M parameters, float32), 300 steps of 16 pairs
(the last 4 positions of each training sequence), evaluated with `dense` and `bm25` (5 sampled
generations per user) on 200 users. Measured (2026-12-02, 2 CPU cores at load ~1-2): 171 s end
to end; test dense recall@1/5/10 0.055 / 0.235 / 0.540 (NDCG@10 0.243), bm25 0.040 / 0.135 /
0.210 (NDCG@10 0.110), Popularity 0.020 / 0.080 / 0.155 (docs/benchmarks.md, "CALRec").

Each step's evaluation prints CALRec's modes next to Popularity; SASRec (CE) on the same split
and users is `configs/sasrec.py:NAME --config.loss.name=ce` (docs/calrec.md).
"""
from recjax import config as config_lib

# Stage-1 domains (a mixture of Amazon categories and MovieLens, as the paper mixes categories).
MIXTURE = ("amazon_office", "amazon_scientific", "amazon_games6k", "ml-1m-pos",
           "amazon2018_gift_cards")


SYNTHETIC = dict(name="synthetic", num_users=600, num_items=300, num_clusters=20, seed=0)


def get_chain(target: str = "synthetic") -> list[tuple[str, str]]:
  """The steps `python -m recjax.chain` runs, in order: (workdir name, get_config argument)."""
  if target == "synthetic":
    return [("cpt", "cpt,synthetic"), ("calrec", "synthetic")]
  return [("cpt", f"cpt,{target}"), ("stage1", f"stage1,{target}"),
          ("stage2", f"stage2,{target}")]


def get_config(args: str = "synthetic"):
  stage, _, target = (a.strip() for a in args.partition(","))
  if stage == "cpt":
    return _cpt(target or "amazon_office")
  config = config_lib.base_config("calrec")
  _backbone(config)
  config.calrec.window = 4
  config.eval.batch_size = 32
  if stage == "synthetic":
    config.data.dataset = dict(SYNTHETIC)
    config.lm.tokenizer_vocab_size = 512
    config.train.num_steps = 300
    config.eval.max_users = 200
    config.eval.num_generations = 5
  elif stage in ("stage1", "stage2"):
    target = target or "amazon_office"
    config.data.dataset = dict(name=target)
    config.lm.tokenizer_vocab_size = 8000
    config.eval.max_users = 500
    if stage == "stage1":
      config.text.mixture = [dict(dataset=dict(name=name), rate=1.0) for name in MIXTURE]
      config.eval.domains = target  # the "stage 1 only" row; "" evaluates every domain
      config.train.num_steps = 3000
    else:
      config.train.num_steps = 2000
      config.optimizer.learning_rate = 1e-3
  else:
    raise ValueError(f"configs/calrec.py:{args}: use synthetic, cpt[,TARGET], stage1[,TARGET] "
                     "or stage2,TARGET")
  return config


def _cpt(target: str):
  """Continual pre-training (the lm task, causal LM) on the text stage 1 trains on."""
  config = config_lib.base_config("lm")
  _backbone(config)
  if target == "synthetic":
    config.data.dataset = dict(SYNTHETIC)
    config.lm.tokenizer_vocab_size = 512
    config.train.num_steps = 300
  else:
    config.data.dataset = dict(name=target)
    config.text.mixture = [dict(dataset=dict(name=name), rate=1.0) for name in MIXTURE]
    config.lm.tokenizer_vocab_size = 8000
    config.train.num_steps = 1000
  config.eval.corpora = "histories"
  return config


def _backbone(config):
  config.text.seq_len = 256
  config.text.max_history_items = 20
  config.text.item_fields = "title"   # short item texts: what the model writes and BM25 reads
  config.text.item_max_chars = 80
  config_lib.cpu_backbone(config)
