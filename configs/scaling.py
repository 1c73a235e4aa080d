"""A scaling sweep of the curriculum's continual pre-training: configs/scaling.py[:NAME].

    python -m recjax.scaling --config=configs/scaling.py --workdir=/tmp/recjax_scaling
    RECJAX_DATA_DIR=../shared/data python -m recjax.scaling \
        --config=configs/scaling.py:amazon_games6k --workdir=/tmp/scaling_games

Every point is `python -m recjax.main --config=configs/curriculum.py:NAME` (the lm task on the
curriculum's mixture of modalities; its held-out perplexity corpora per modality) with one of the
model sizes below and `train.num_steps` = one of the budgets, in its own workdir; the points
share the first point's tokenizer. Re-running resumes the sweep (finished points are skipped).
At the end ROOT/report.md has each point's test loss per corpus and the fits L(D) = L_inf +
A*D^-alpha per size and L(N, D) = E + A*N^-alpha + B*D^-beta per corpus (standard errors, R^2),
ROOT/plots/ the curves (recjax/scaling/sweep.py). `--dry_run` prints the 16 commands.

`configs/scaling.py:NAME,modalities` repeats a smaller grid (sizes s2 and s3 x 120, 240 and 480
steps) once per training mixture (MODALITIES below: every modality, then each one alone; general
text is the review text of GENERAL_REVIEWS, so it needs ../shared/data), for the paper's claim
that user histories > co-occurrence > item text > general text as training data: ROOT/report.md
ranks the mixtures by each held-out loss at equal size and tokens, and each mixture has its own
fits in ROOT/<mixture>/report.md. 36 points; measured 1 h 47 min on 2 CPU cores beside other
work (docs/modalities_games/: user histories most useful, general text least):

    RECJAX_DATA_DIR=../shared/data python -m recjax.scaling \
        --config=configs/scaling.py:amazon_games6k,modalities --workdir=/tmp/modalities_games

`configs/scaling.py:NAME,long`: the same 4 sizes x 120 to 960 steps with a 2,000-piece
tokenizer (0.26M to 1.99M parameters; about the default grid's FLOPs). Measured on
amazon_games6k: 52.5 min on 2 nearly idle CPU cores, joint-law R^2 0.986-0.991 per held-out
corpus (docs/scaling_long_games/).
Expected on 2 CPU cores: 4 sizes (0.83M to 3.91M parameters with amazon_games6k's 8,064-token
vocabulary) x 4 budgets (60 to 480 steps of 16 x 256 tokens; the budgets double so that D spans
8x): 1 h 40 min on a busy machine, joint-law R^2 0.93-0.98 per corpus
(docs/scaling_sweep_games/).
"""
import ml_collections

_RATES = ("item_text", "rules", "walks", "histories", "general")
# General text: no web text ships, so the review texts of two other Amazon 2018 categories
# (natural language, none of the catalogue's items; ~3,400 documents, ~160k tokens).
GENERAL_REVIEWS = "amazon2018_gift_cards,amazon2018_all_beauty"
# Training mixtures of the modality comparison: name -> overrides of every point's config.
MODALITIES = {
    "all": [],  # configs/curriculum.py's own rates (no general text)
    **{only: [f"--config.curriculum.rates.{m}={float(m == only)}" for m in _RATES]
       for only in _RATES},
}
MODALITIES["general"].append(f"--config.curriculum.general_reviews={GENERAL_REVIEWS}")


def get_config(args: str = "synthetic"):
  name, _, variant = (a.strip() for a in args.partition(","))
  if variant not in ("", "modalities", "long"):
    raise ValueError(f"configs/scaling.py:{args}: use NAME, NAME,modalities or NAME,long")
  config = _sweep(name)
  if variant == "long":
    # Past the warm-up-dominated start (the default grid's 60-step points are half warm-up)
    # at about the default grid's cost: budgets twice as long, and a 2,000-piece tokenizer,
    # which shrinks the output layer that dominates these small models' step (s1: 86% of
    # its FLOPs per token with 8,064 ids, 62% with 2,048; the grid: 1.09x the default FLOPs).
    config.steps = [120, 240, 480, 960]
    config.overrides.append("--config.lm.tokenizer_vocab_size=2000")
  if variant == "modalities":
    config.mixtures = {k: list(v) for k, v in MODALITIES.items()}
    config.tokenizer_mixture = "all"  # the shared tokenizer learns every modality's text
    config.sizes = {k: config.sizes[k] for k in ("s2", "s3")}
    config.steps = [120, 240, 480]
  return config


def _sweep(name: str):
  return ml_collections.ConfigDict(dict(
      base=f"configs/curriculum.py:{name}",  # FILE[:ARG] of every point's recjax.main run.
      # Model sizes: name -> model.overrides (tiny_llama widened); N is counted from the run.
      sizes=dict(
          s1=dict(num_layers=2, hidden_size=48, num_heads=4, num_kv_heads=4, head_dim=12,
                  mlp_dim=144),
          s2=dict(num_layers=2, hidden_size=80, num_heads=4, num_kv_heads=4, head_dim=20,
                  mlp_dim=240),
          s3=dict(num_layers=3, hidden_size=112, num_heads=4, num_kv_heads=4, head_dim=28,
                  mlp_dim=336),
          s4=dict(num_layers=4, hidden_size=160, num_heads=4, num_kv_heads=4, head_dim=40,
                  mlp_dim=480),
      ),
      steps=[60, 120, 240, 480],  # data budgets in training steps (D = steps x batch x seq_len).
      # Overrides for every point, e.g. "--config.eval.max_documents=256".
      overrides=["--config.train.checkpoint_every_steps=1000000"],
      # Training mixtures (name -> overrides, as `overrides`); each repeats the grid in
      # ROOT/<name>/. Empty: one mixture, the base config's.
      mixtures={},
      # The mixture whose first point trains the tokenizer all points share (it runs first);
      # "" = the first name in sorted order.
      tokenizer_mixture="",
  ))
