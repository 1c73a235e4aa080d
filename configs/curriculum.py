"""Continual pre-training on the synthetic-data curriculum (SPECS.md §3): configs/curriculum.py.

One run, every modality mixed (the lm task on `config.curriculum`, recjax/curriculum/corpora.py):

    python -m recjax.main --config=configs/curriculum.py --workdir=/tmp/recjax_curriculum
    RECJAX_DATA_DIR=../shared/data python -m recjax.main \
        --config=configs/curriculum.py:amazon_games6k --workdir=/tmp/recjax_curriculum_games

The stages in order (`get_chain`: grounding -> histories, each from the previous stage's
parameters and tokenizer; recjax/chain.py):

    python -m recjax.chain --config=configs/curriculum.py:synthetic --workdir=/tmp/curriculum_chain
    # one stage by hand: configs/curriculum.py:grounding[,NAME] or histories[,NAME]

ARGS is `NAME` (all modalities in one run), `grounding[,NAME]` (stage 1: item-text alignment
sentences + co-occurrence rules) or `histories[,NAME]` (stage 2: node2vec walks + real training
histories). NAME `synthetic` (default, no download) is recjax's synthetic dataset (2,000 users,
1,000 items whose titles name their latent cluster), with a 512-piece SentencePiece model trained
into the workdir on the curriculum's documents, `tiny_llama` 4 x 128 (about 1M parameters,
float32), 300 steps of 16 x 256 packed tokens. Any other NAME is a registry dataset (e.g.
amazon_games6k) read from $RECJAX_DATA_DIR or `--config.data.root`, with an 8,000-piece
tokenizer and 1,000 steps.

Expected on 2 CPU cores (synthetic, one run): about 8 minutes end to end on a busy machine
(466 s measured at load ~8, about 0.6 training steps/s; a quiet machine is faster, not measured);
training loss ~0.85 per token at the end. The final table gives test perplexities per held-out
corpus, measured: curriculum/item_text 2.15 (the 50 held-out items' alignment sentences),
curriculum/pairs_both_seen 4.13 (target_ppl 16.6: the second item given the first),
curriculum/histories_heldout_users 2.78, curriculum/histories_full_graph 2.73, and the lm task's
histories 1.83 (target_ppl 2.71). On synthetic data no held-out pair has an item unseen in
training, so curriculum/pairs_one_unseen and pairs_both_unseen are left out (a warning says so);
real data has them (amazon_games6k: 140 one-unseen test pairs).

The general-text modality needs a file: `--config.curriculum.general_file=wiki.txt
--config.curriculum.rates.general=0.5`. Every knob of `config.curriculum` is listed, with its
default, in docs/curriculum.md. Re-running the same command resumes from the latest
checkpoint.
"""
from recjax import config as config_lib

SYNTHETIC = dict(name="synthetic", num_users=2000, num_items=1000, num_clusters=20, seed=0)
# Modality rates of each stage (normalised per stage). "all" mixes everything in one run with
# the paper's usefulness order (histories > co-occurrence > item text > general).
STAGES = {
    "all": dict(item_text=1.0, rules=1.0, walks=2.0, histories=2.0, general=0.0),
    "grounding": dict(item_text=1.0, rules=1.0, walks=0.0, histories=0.0, general=0.0),
    "histories": dict(item_text=0.0, rules=0.0, walks=1.0, histories=1.0, general=0.0),
}


def get_chain(name: str = "synthetic") -> list[tuple[str, str]]:
  """The stages `python -m recjax.chain` runs, in order: (workdir name, get_config argument)."""
  return [("grounding", f"grounding,{name}"), ("histories", f"histories,{name}")]


def get_config(args: str = "synthetic"):
  first, _, rest = (a.strip() for a in args.partition(","))
  stage, name = (first, rest or "synthetic") if first in STAGES else ("all", first)
  if rest and first not in STAGES:
    raise ValueError(f"configs/curriculum.py:{args}: use NAME, grounding[,NAME] or "
                     "histories[,NAME]")
  config = config_lib.base_config("lm")
  if name == "synthetic":
    config.data.dataset = dict(SYNTHETIC)
    config.lm.tokenizer_vocab_size = 512    # SentencePiece pieces trained on the curriculum.
    config.train.num_steps = 300
  else:
    config.data.dataset = dict(name=name)
    config.lm.tokenizer_vocab_size = 8000
    config.train.num_steps = 1000
  config.text.templates = "calrec,profile"  # the real-history modality's templates.
  config.text.seq_len = 256                 # tokens per packed row (and per-document budget).
  config.text.max_history_items = 20        # most recent items of a real or held-out history.
  cur = config.curriculum
  cur.rates = dict(STAGES[stage])           # modality rates of this stage.
  cur.length = 0                            # documents per epoch; 0 = sum of the corpora.
  cur.item_text.id = "auto"                 # semantic ID if text.semantic_ids, else the text.
  cur.item_text.heldout_fraction = 0.05     # items whose alignment sentence is held out.
  cur.rules.window = 3                      # b at most 3 positions after a.
  cur.rules.min_count = 2                   # a pair in >= 2 training sequences.
  cur.rules.min_confidence = 0.0            # no confidence floor.
  cur.rules.min_lift = 1.0                  # at least as often together as chance.
  cur.rules.max_rules = 0                   # every rule passing the thresholds.
  cur.walks.templates = "profile"           # a walk as a whole-history document.
  cur.walks.p = 1.0                         # node2vec return parameter.
  cur.walks.q = 1.0                         # node2vec in-out parameter.
  cur.walks.walk_length = 20                # items per walk.
  cur.walks.walks_per_node = 10             # walks per item.
  cur.walks.seed = 0                        # walk seed.
  cur.walks.isolated = "skip"               # isolated items start no walk.
  config_lib.cpu_backbone(config)
  config.eval.corpora = "curriculum,histories"  # held-out corpora per modality + next item.
  config.eval.max_documents = 256           # per corpus: a fixed random subset.
  return config
