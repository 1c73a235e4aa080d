"""RecSysLLM on a small Llama backbone: GLM blank-infilling pre-training (configs/glm.py[:NAME])
and LoRA multitask fine-tuning on the P5 families (configs/glm.py:p5[,NAME]).

    python -m recjax.main --config=configs/glm.py --workdir=/tmp/recjax_glm
    RECJAX_DATA_DIR=../shared/data python -m recjax.main \
        --config=configs/glm.py:ml-100k --workdir=/tmp/recjax_glm_ml100k
    # both stages, the second starting from the first's parameters (recjax.chain):
    python -m recjax.chain --config=configs/glm.py:synthetic --workdir=/tmp/recjax_recsysllm

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

`p5[,NAME]` (multitask fine-tuning; NAME as above, default synthetic): LoRA adapters (rank 8 on
the attention and MLP projections; the base and the intra-position table stay frozen) trained
on the training prompts of every P5 family the data supports, the answer always the
[gMASK] span (`text.glm.target_as_gmask`); the held-out prompt of each family is never trained
on. Evaluation (`p5`, recjax/eval/p5.py) runs every family on seen and unseen prompts: RMSE/
MAE for ratings, sampled99 and full-catalogue HR/NDCG@5/10 for item answers, accuracy for yes/
no, BLEU/ROUGE for explanations and review summaries. Start it from a pre-trained workdir
with `--config.init_from.path=DIR` (the chain above does; its step 0 tokenizer is reused), else
it fine-tunes a random base. On synthetic data (sequential and direct families only) 300
steps; on a real dataset 1,000.
Expected for the chain on synthetic data (measured 2026-12-02, 2 CPU cores shared with another
run, load ~4): 9 min 20 s end to end for both steps; the pre-training table as above (3.43 /
26.4); then, on 50 test users under every template: sequential sampled99_hr@10 0.65 on the
training prompts and 0.62 on the held-out one, full-catalogue hr@10 0.14 / 0.16 (1,000 items),
direct yes/no accuracy 0.80, direct sampled19_hr@10 0.90 / 0.90.

Useful overrides: `--config.init_from.path=DIR` (a glm workdir: its parameters; or a local
Hugging Face directory: its architecture, weights and tokenizer.json), `--config.text.glm.
masking=token` / `order=shuffled` / `positions=1d` (GLM's choices instead of RecSysLLM's),
`--config.glm_corpus.behaviour=False`, `--config.eval.evaluators=infilling,perplexity`.
Re-running the same command resumes from the latest checkpoint.
"""
from recjax import config as config_lib


def get_chain(name: str = "synthetic") -> list[tuple[str, str]]:
  """The steps `python -m recjax.chain` runs: pre-training, then P5 multitask fine-tuning."""
  return [("pretrain", name), ("p5", f"p5,{name}")]


def get_config(args: str = "synthetic"):
  stage, _, rest = (a.strip() for a in args.partition(","))
  if stage == "p5":
    return _p5(rest or "synthetic")
  if rest:
    raise ValueError(f"configs/glm.py:{args}: use NAME (pre-training) or p5[,NAME]")
  return _pretrain(stage)


def _p5(name: str):
  """LoRA multitask fine-tuning on the P5 training prompts, answers as [gMASK] spans."""
  config = _pretrain(name)
  config.text.templates = "p5"  # the training templates of every family (held-out excluded)
  config.text.glm.target_as_gmask = True
  config.glm_corpus.behaviour = False  # P5 prompts show the history the template asks for
  config.model.lora.rank = 8  # RecSysLLM: rank 8
  config.model.lora.targets = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
  config.optimizer.learning_rate = 1e-2  # adapters start at zero: a larger step than full FT
  # p5 once, in the final evaluation (the training loop never evaluates at its last step).
  config.eval.evaluators = f"infilling,p5@{config.train.num_steps}"
  config.eval.p5.max_users = 50 if name == "synthetic" else 200
  return config


def _pretrain(name: str):
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
