"""Causal LM training of a small Llama backbone on recommendation text: configs/lm.py[:NAME].

    python -m recjax.main --config=configs/lm.py --workdir=/tmp/recjax_lm
    RECJAX_DATA_DIR=../shared/data python -m recjax.main \
        --config=configs/lm.py:amazon_office --workdir=/tmp/recjax_lm_office

NAME `synthetic` (default, no download): recjax's synthetic dataset (2,000 users, 1,000 items
whose titles name their latent cluster) rendered with the CALRec history -> next-item template
and the whole-history `profile` document; a 512-piece SentencePiece model is trained into the
workdir first. The model is `tiny_llama` widened to 4 layers x 128 (about 1M parameters, float32),
trained for 300 steps of 16 x 256 packed tokens (AdamW, cosine schedule). Expected on 2 CPU
cores: 3-6 minutes end to end (166 s measured on a quiet machine, 351 s on a busy one); training
loss ~0.8 per token; the table printed at the end gives test perplexities of about 1.8 on
`histories` (held-out users' histories followed by their next item), about 2.6 on
`histories/target_ppl` (the next item's title alone, given the history) and a very high, unstable
one on `items` (489, 646 and 831 in the three runs recorded so far, docs/benchmarks.md and issue
9): bare item titles are never a training document, so the model is confidently wrong about how
such a document starts, and that figure swings with small changes of the run.
Measured figures are in docs/benchmarks.md.

Any other NAME is a dataset of recjax.data.registry (e.g. amazon_office, ml-100k), read from
$RECJAX_DATA_DIR or `--config.data.root`, with an 8,000-piece tokenizer and 1,000 steps.

Useful overrides: `--config.model.hf_checkpoint=DIR` (fine-tune a local Hugging Face checkpoint:
architecture, weights and tokenizer.json from DIR), `--config.model.lora.rank=8` (train LoRA
adapters only),
`--config.lm.text_file=corpus.txt` (plain text, one document per line),
`--config.eval.corpora=histories,items,wiki=/data/wiki.txt`, `--config.text.templates=calrec,p5`.
Re-running the same command resumes from the latest checkpoint.
"""
from recjax import config as config_lib


def get_config(name: str = "synthetic"):
  config = config_lib.base_config("lm")
  if name == "synthetic":
    config.data.dataset = dict(name="synthetic", num_users=2000, num_items=1000,
                               num_clusters=20, seed=0)
    config.lm.tokenizer_vocab_size = 512
    config.train.num_steps = 300
  else:
    config.data.dataset = dict(name=name)
    config.lm.tokenizer_vocab_size = 8000
    config.train.num_steps = 1000
  config.text.templates = "calrec,profile"
  config.text.seq_len = 256
  config_lib.cpu_backbone(config)
  config.eval.max_documents = 256
  return config
