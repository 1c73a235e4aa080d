"""GLM blank-infilling pre-training (RecSysLLM) of a small Llama backbone: configs/glm.py[:NAME].

    python -m recjax.main --config=configs/glm.py --workdir=/tmp/recjax_glm
    RECJAX_DATA_DIR=../shared/data python -m recjax.main \
        --config=configs/glm.py:ml-100k --workdir=/tmp/recjax_glm_ml100k

NAME `synthetic` (default, no download): recjax's synthetic dataset (2,000 users, 1,000 items
whose titles name their latent cluster) rendered as whole-history `profile` documents and the
training prompts of the P5 families the data supports (sequential and direct here; rating,
explanation and review need ratings/reviews and are skipped), each user document showing a
long-, medium- or short-term window of its history (10/30/60%, RecSysLLM's behaviour
sampling). Every document is corrupted by GLM blank infilling with entity-aware spans (an item
is never cut), [MASK]/[sMASK]/[gMASK] in 50/30/20% of the examples, spans in chronological
order and 2D positions (inter -> RoPE, intra -> a learned table of seq_len rows). A 512-piece
SentencePiece model is trained into the workdir first. The model is `tiny_llama` widened to
4 layers x 128 (about 1M parameters, float32), trained for 300 steps of 16 x 256 packed tokens
(AdamW, cosine schedule).
Expected on 2 CPU cores (measured 2026-12-01 on a machine shared with other jobs, load average
13-16): 22.6 minutes end to end (8.7 CPU-minutes of user + system time; a quiet machine should
take well under half of that, not measured); training loss (mean per Part-B token) ~1.1 and
exact-token accuracy ~0.6 at step 300 (3.4 and 0.34 at step 25); the table printed at the end
gives test infilling perplexities (Part B of held-out documents, fixed spans) of 3.43 on
`histories` (held-out users' P5/profile documents with their next item) and 26.4 on `items`
(bare item titles, never a training document on their own). `python -m recjax.evaluate
--workdir=/tmp/recjax_glm` prints the same figures from the checkpoint.

Any other NAME is a dataset of recjax.data.registry (e.g. ml-100k, amazon_office), read from
$RECJAX_DATA_DIR or `--config.data.root`, with an 8,000-piece tokenizer and 1,000 steps.

Useful overrides: `--config.init_from.path=DIR` (a glm workdir: its parameters; or a local
Hugging Face directory: its architecture, weights and tokenizer.json), `--config.text.glm.
masking=token` / `order=shuffled` / `positions=1d` (GLM's choices instead of RecSysLLM's),
`--config.glm_corpus.behaviour=False`, `--config.eval.evaluators=infilling,perplexity`.
Re-running the same command resumes from the latest checkpoint.
"""
from recjax import config as config_lib


def get_config(name: str = "synthetic"):
  config = config_lib.base_config("glm")
  if name == "synthetic":
    config.data.dataset = dict(name="synthetic", num_users=2000, num_items=1000,
                               num_clusters=20, seed=0)
    config.lm.tokenizer_vocab_size = 512
    config.train.num_steps = 300
  else:
    config.data.dataset = dict(name=name)
    config.lm.tokenizer_vocab_size = 8000
    config.train.num_steps = 1000
  config.text.templates = "profile,p5"
  config.text.seq_len = 256
  config_lib.cpu_backbone(config)
  config.eval.max_documents = 256
  return config
