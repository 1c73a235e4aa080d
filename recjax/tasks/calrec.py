"""CALRec (Li et al., RecSys 2024): one decoder LLM trained as a generator and as two towers.

Training examples are (history, next item) pairs from the training part of the split
(recjax.text.calrec_pairs: every prefix of each training sequence, or the last
`calrec.window`), each rendered twice with the same weights: the joint sequence (the CALRec
template: the history, then the next item's text) and the item-alone sequence (BOS + the next
item's text). The two are two padded rows per pair (not packed), so every pooling mask is a
plain per-token mask of its row. From the hidden states of `calrec.pool_layer`:

  v_U    the joint row's last prompt token, or a mean over its history (`calrec.user_tokens`)
  v_T|U  mean over the next item's tokens of the joint row
  v_T    mean over the item tokens of the item-alone row

  L_NIG  next-item generation: NLL of the next item's tokens (and EOS) in the joint row, the
         mean over its tokens per pair
  L_TT   in-batch InfoNCE between v_T|U and v_T     (objectives.contrastive.info_nce)
  L_UT   in-batch InfoNCE between v_U and v_T
  loss = w_nig * L_NIG + w_tt * L_TT + w_ut * L_UT, per pair, averaged over the batch.

Cosine similarity over `calrec.temperature`. Negatives: the whole global batch. The loss is
traced under jit over the global batch (sharded over the data-parallel axes), so the [B, B]
similarity matrices span every device and process, not one device's shard; an item that is
the next item of two pairs of the batch is never its own negative (masked by `pair_id`, which
also tells the domains of a mixture apart). With `train.grad_accum_steps > 1` each microbatch
is its own set of negatives. A weight of 0 switches its loss off (w_tt = w_ut = 0 skips the
item-alone rows altogether: plain next-item fine-tuning). The paper leaves the weights, the
temperature and the pooled layer open; the defaults below are recjax's choice.

Two stages (the paper's multi-domain stage 1, target-domain stage 2) are two runs:
`config.init_from.path` names the earlier run's workdir (parameters only; the trainer's rule).
Evaluators (`config.eval.evaluators`, recjax/eval/calrec.py): `dense` (v_U against v_T of
every catalogue item), `bm25` (K sampled generations, BM25 over the catalogue, quasi-round-
robin merge), `constrained` (trie-constrained beam search over catalogue texts), and the lm
task's `perplexity`. Metrics per mode: recall@K / ndcg@K / mrr@K over the full catalogue of
each evaluated domain, users/s.

Bad input: a dataset without item text is refused (CALRec reads and writes item texts); an
item whose text is empty after cleaning is written as its fallback "item <raw id>" (counted in
`summary`); a user whose training sequence has one item gives no pair; see docs/calrec.md.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from recjax.eval import calrec as calrec_eval
from recjax.eval import perplexity as perplexity_eval
from recjax.eval import ranking as ranking_eval
from recjax.models import llm
from recjax.objectives import contrastive
from recjax.objectives import lm as lm_loss
from recjax.tasks import lm as lm_task
from recjax.text import calrec_pairs
from recjax.text import encoding
from recjax.text import mixture as mixture_lib
from recjax.text import pipeline
from recjax.text import user_corpus


def pool_layer_arg(value: Any) -> bool | int:
  """`calrec.pool_layer` as `LLM.__call__`'s `return_hidden`: "final" -> True (the
  final-normed states, the LM head's inputs), an integer -> that block's output."""
  if str(value).strip() == "final":
    return True
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"config.calrec.pool_layer={value!r}: use 'final' or a block index "
                     "(negative counts from the end)") from None


def calrec_loss(model: llm.LLM, batch: Mapping[str, jax.Array], *, layer: bool | int,
                temperature: float, w_nig: float, w_tt: float, w_ut: float,
                bidirectional: bool = True):
  """`(loss sum over pairs, valid pairs, {nig, tt, ut, tt_ncorrect, ut_ncorrect} as sums)` of a
  batch of `calrec_pairs` rows; see the module docstring."""
  valid = batch["valid"] > 0
  joint = model(batch["tokens"], positions=batch["positions"],
                segment_ids=batch["segment_ids"], return_hidden=layer)
  nll, _ = lm_loss.next_token_nll(joint.logits, batch["tokens"], batch["segment_ids"])
  answer = lm_loss.answer_mask(batch["segment_ids"], batch["loss_mask"])
  per_pair = (jnp.sum(jnp.where(answer, nll, 0.0), axis=1) /
              jnp.maximum(jnp.sum(answer, axis=1), 1).astype(jnp.float32))
  nig = jnp.sum(jnp.where(valid, per_pair, 0.0))
  count = jnp.sum(valid.astype(jnp.float32))
  zero = jnp.zeros((), jnp.float32)
  tt = ut = tt_correct = ut_correct = zero
  if w_tt or w_ut:
    item = model(batch["item_tokens"], positions=batch["item_positions"],
                 segment_ids=batch["item_segment_ids"], return_hidden=layer,
                 compute_logits=False)
    v_t = contrastive.mean_pool(item.hidden, batch["item_mask"])
    kwargs = dict(temperature=temperature, ids=batch["pair_id"], valid=valid,
                  bidirectional=bidirectional)
    if w_tt:
      v_tu = contrastive.mean_pool(joint.hidden, batch["target_mask"])
      tt, _, m = contrastive.info_nce(v_tu, v_t, **kwargs)
      tt_correct = m["ncorrect"]
    if w_ut:
      v_u = contrastive.mean_pool(joint.hidden, batch["user_mask"])
      ut, _, m = contrastive.info_nce(v_u, v_t, **kwargs)
      ut_correct = m["ncorrect"]
  total = w_nig * nig + w_tt * tt + w_ut * ut
  return total, count, {"nig": nig, "tt": tt, "ut": ut, "tt_ncorrect": tt_correct,
                        "ut_ncorrect": ut_correct}


class CALRecTask(lm_task.LMTask):
  """CALRec on one dataset or a multi-domain mixture; see the module docstring.

  Tokenizer, backbone, LoRA and Hugging Face starting points are the lm task's (its
  `model`, `lm` and `text` blocks mean the same here).
  """

  name = "CALRec"
  results_heading = "full-catalogue ranking per retrieval mode"

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
    cfg = config.calrec
    calrec_pairs.check_template(str(cfg.template))
    if config.lm.text_file:
      raise ValueError("config.lm.text_file: CALRec trains on rendered (history, next item) "
                       "pairs of config.data / config.text.mixture, not a text file")
    if str(cfg.user_tokens) not in calrec_pairs.USER_TOKENS:
      raise ValueError(f"config.calrec.user_tokens={cfg.user_tokens!r}: choose from "
                       f"{calrec_pairs.USER_TOKENS}")
    self.layer = pool_layer_arg(cfg.pool_layer)
    self.weights = (float(cfg.w_nig), float(cfg.w_tt), float(cfg.w_ut))
    if min(self.weights) < 0 or not any(self.weights):
      raise ValueError(f"config.calrec.w_nig/w_tt/w_ut={self.weights}: must be >= 0, one > 0")
    if float(cfg.temperature) <= 0:
      raise ValueError(f"config.calrec.temperature={cfg.temperature}: must be > 0")
    self._domains_cache: list[calrec_eval.Domain] | None = None
    super().__init__(config, workdir)

  def _evaluator_factories(self) -> dict[str, Any]:
    # Called at the end of LMTask.__init__: the tokenizer and the pairs exist by then.
    self.item_len = self._item_len()
    self.id_stride = 1 + max(d.catalogue.num_items for d in self._pair_domains())
    cfg = self.config.eval
    shared = dict(domains=self._eval_domains, ks=tuple(cfg.ks),
                  exclude_history=bool(cfg.exclude_history), batch_size=int(cfg.batch_size),
                  layer=self.layer)
    gen = dict(num_generations=int(cfg.num_generations), max_new_tokens=self.item_len + 1,
               eos_id=int(self.tokenizer.eos_id), pad_id=int(self.tokenizer.pad_id),
               decode=self._decode)
    return {
        "dense": lambda every: calrec_eval.DenseEvaluator(every_steps=every, **shared),
        "bm25": lambda every: calrec_eval.BM25Evaluator(
            every_steps=every, temperature=float(cfg.temperature),
            method=str(cfg.generation), bm25_top_k=int(cfg.bm25_top_k),
            seed=int(self.config.seed), **gen, **shared),
        "constrained": lambda every: calrec_eval.ConstrainedEvaluator(
            every_steps=every, **gen, **shared),
        **super()._evaluator_factories(),
    }

  # --- Set-up ---------------------------------------------------------------------------------

  def _training_corpus(self, tokenizer):
    """The pairs (a `PairCorpus`, or a `Mixture` of one per domain)."""
    cfg = copy.deepcopy(self.config)
    with cfg.unlocked():
      cfg.text.targets = "all"  # every training position; PairCorpus picks the window
      cfg.text.templates = str(self.config.calrec.template)
      cfg.text.objective = "causal_lm"
    corpus = pipeline.build_corpus(cfg, "train", tokenizer)
    window = int(self.config.calrec.window)
    domains = corpus.domains if isinstance(corpus, mixture_lib.Mixture) else [corpus]
    for d in domains:
      data = d.data
      if not any(f in data.item_text for f in str(self.config.text.item_fields).split(",")):
        raise ValueError(
            f"dataset {data.name!r} has no item text in config.text.item_fields="
            f"{self.config.text.item_fields!r} (it has {sorted(data.item_text)}): CALRec reads "
            "and writes item texts")
    if isinstance(corpus, mixture_lib.Mixture):
      pairs = [mixture_lib.Domain(d.name, calrec_pairs.PairCorpus(d.corpus, window), d.rate,
                                  d.data, d.split, d.catalogue, d.corpus_kwargs)
               for d in corpus.domains]
      for d in pairs:
        if not len(d.corpus):
          raise ValueError(f"domain {d.name!r} of config.text.mixture has no training pair "
                           "(every training sequence has fewer than 2 items)")
      return mixture_lib.Mixture(pairs, seed=int(self.config.seed))
    pairs = calrec_pairs.PairCorpus(corpus, window)
    if not len(pairs):
      raise ValueError(f"dataset {corpus.data.name!r} has no training pair: every training "
                       "sequence has fewer than 2 items")
    return pairs

  def _pair_domains(self) -> list[Any]:
    """(corpus, data, split, catalogue, name) holders of the training pairs, one per domain."""
    corpus = self.train_corpus
    if isinstance(corpus, mixture_lib.Mixture):
      return [d.corpus for d in corpus.domains]
    return [corpus]

  def _item_len(self) -> int:
    """`calrec.item_len`, or (0) the longest catalogue item text in tokens."""
    if int(self.config.calrec.item_len) > 0:
      return int(self.config.calrec.item_len)
    longest = 1
    for d in self._pair_domains():
      texts = d.catalogue.texts[1:]
      longest = max([longest] + [len(self.tokenizer.encode(t).ids) for t in texts])
    return longest

  def _estimate_steps_per_epoch(self) -> int:
    self._check_fits()
    return max(1, len(self.train_corpus) // int(self.config.train.batch_size))

  def _check_fits(self, sample: int = 64) -> None:
    """Refuses a seq_len too short for the template, one history item and the next item."""
    corpus = self.train_corpus
    encode = calrec_pairs.EncodePair(self.tokenizer, self.seq_len, 1 << 20,
                                     str(self.config.calrec.user_tokens))
    picks = np.unique(np.linspace(0, len(corpus) - 1, min(sample, len(corpus))).astype(int))
    rows = [encode.map(corpus[int(i)]) for i in picks]
    if not any(int(r["valid"]) for r in rows):
      needed = min(len(self.tokenizer.encode(corpus[int(i)].text, add_bos=True,
                                             add_eos=True).ids) for i in picks)
      raise ValueError(f"config.text.seq_len={self.seq_len} cannot hold the CALRec template "
                       f"with one history item and the next item: the shortest of {len(rows)} "
                       f"sampled pairs needs {needed} tokens")

  def summary(self) -> str:
    corpus = self.train_corpus
    fallbacks = sum(int((~d.catalogue.has_text[1:]).sum()) for d in self._pair_domains())
    lora_rank = int(self.config.model.lora.rank)
    model = f"HF checkpoint {self.hf_dir}" if self.hf_dir else self.config.model.preset
    return (f"{corpus.describe()}\nCALRec pairs: {len(corpus):,} per epoch (about "
            f"{self.steps_per_epoch:,} steps); items written by their fallback text (no text "
            f"after cleaning): {fallbacks}; tokenizer {self.config.text.tokenizer} "
            f"({self.tokenizer.vocab_size:,} ids); model {model}: "
            f"{self.model_config.num_params() / 1e6:.2f}M parameters, seq_len {self.seq_len}, "
            f"item_len {self.item_len}; loss weights nig/tt/ut {self.weights}, temperature "
            f"{float(self.config.calrec.temperature)}"
            f"{f', LoRA rank {lora_rank}' if lora_rank else ''}")

  @property
  def table_columns(self) -> list[str]:
    out = []
    for evaluator in self.evaluators:
      if isinstance(evaluator, perplexity_eval.PerplexityEvaluator):
        continue
      for domain in self._eval_domains():
        prefix = f"{evaluator.name}/{domain.prefix}"
        out += [f"{prefix}recall@1", f"{prefix}recall@5", f"{prefix}recall@10",
                f"{prefix}ndcg@10"]
    return out

  # --- Task interface -------------------------------------------------------------------------

  def train_data(self, process_index: int, process_count: int):
    batch = int(self.config.train.batch_size)
    if batch % process_count:
      raise ValueError(f"train.batch_size={batch} is not divisible by {process_count} processes")
    return calrec_pairs.make_pair_dataset(
        self.train_corpus, self.tokenizer, seq_len=self.seq_len, item_len=self.item_len,
        batch_size=batch // process_count, user_tokens=str(self.config.calrec.user_tokens),
        id_stride=self.id_stride, seed=int(self.config.seed), shard_index=process_index,
        shard_count=process_count)

  def loss(self, model: llm.LLM, batch: Mapping[str, jax.Array], rngs: nnx.Rngs):
    del rngs  # the backbone has no dropout
    w_nig, w_tt, w_ut = self.weights
    return calrec_loss(model, batch, layer=self.layer,
                       temperature=float(self.config.calrec.temperature), w_nig=w_nig,
                       w_tt=w_tt, w_ut=w_ut, bidirectional=bool(self.config.calrec.bidirectional))

  def baselines(self, split: str) -> dict[str, dict[str, float]]:
    """Most-popular items (training counts) per evaluated domain, under every mode's name."""
    out: dict[str, float] = {}
    for domain in self._eval_domains():
      users = domain.users(split)
      ranks = calrec_eval.popularity_ranks(domain.popularity, users,
                                           bool(self.config.eval.exclude_history))
      metrics = calrec_eval.metrics_lib.ranking_metrics(ranks, tuple(self.config.eval.ks))
      for evaluator in self.evaluators:
        if not isinstance(evaluator, perplexity_eval.PerplexityEvaluator):
          out.update({f"{evaluator.name}/{domain.prefix}{k}": v for k, v in metrics.items()})
    return {"Popularity": out} if out else {}

  # --- Evaluation inputs ----------------------------------------------------------------------

  def _decode(self, ids) -> str:
    """Generated ids -> text. The model's vocabulary is the tokenizer's rounded up
    (`model.vocab_multiple`): a sampled id past the tokenizer's is no piece and is dropped."""
    vocab = self.tokenizer.vocab_size
    return self.tokenizer.decode([int(i) for i in ids if 0 <= int(i) < vocab],
                                 skip_special=True)

  def _eval_domains(self) -> list[calrec_eval.Domain]:
    """The evaluated domains of the training corpus (`eval.domains`), with their catalogues
    and evaluation users."""
    if self._domains_cache is not None:
      return self._domains_cache
    pairs = self._pair_domains()
    mixture = len(pairs) > 1  # a mixture's metrics carry the domain, evaluated alone or not
    wanted = {w.strip() for w in str(self.config.eval.domains).split(",") if w.strip()}
    if wanted:  # a domain is named by its dataset or its tag
      names = [{p.data.name, p.domain} for p in pairs]
      unknown = sorted(wanted - set().union(*names))
      if unknown:
        raise ValueError(f"config.eval.domains: {unknown} is not a domain of the training "
                         f"corpus; its domains are {[p.data.name for p in pairs]}")
      pairs = [p for p, n in zip(pairs, names) if n & wanted]
    out = []
    for pair_corpus in pairs:
      catalogue, split = pair_corpus.catalogue, pair_corpus.split
      texts = list(catalogue.texts)
      rows = [calrec_pairs.item_row(self.tokenizer, t, self.item_len) for t in texts]
      masks = [(np.arange(len(r)) > 0).astype(np.int32) for r in rows]
      popularity = np.bincount(split.train.values, minlength=catalogue.num_items + 1)
      prefix = f"{lm_task._slug(pair_corpus.domain)}/" if mixture else ""
      out.append(calrec_eval.Domain(
          prefix=prefix, texts=texts, item_rows=rows, item_masks=masks,
          popularity=popularity.astype(np.float64),
          users=_UserPrompts(self, pair_corpus)))
    self._domains_cache = out
    return out


class _UserPrompts:
  """split -> `calrec_eval.EvalUsers` of one domain (prompts encoded once, then kept)."""

  def __init__(self, task: CALRecTask, pair_corpus: calrec_pairs.PairCorpus):
    self.task, self.pairs = task, pair_corpus
    self._cache: dict[str, calrec_eval.EvalUsers] = {}

  def __call__(self, split: str) -> calrec_eval.EvalUsers:
    if split not in ("valid", "test"):
      raise ValueError(f"split must be 'valid' or 'test', got '{split}'")
    if split in self._cache:
      return self._cache[split]
    task, source = self.task, self.pairs.corpus
    cfg = task.config
    # The prompt leaves room for the longest item text and EOS, as in training.
    corpus = user_corpus.UserCorpus(
        source.data, source.split, templates=str(cfg.calrec.template), part=split,
        catalogue=source.catalogue, tokenizer=task.tokenizer,
        max_tokens=task.seq_len - task.item_len - 1,
        max_history_items=int(cfg.text.max_history_items),
        min_history_items=int(cfg.text.get("min_history_items", 1)), domain=source.domain,
        seed=int(cfg.seed), add_eos=False)
    # The users SASRec evaluates with the same seed and eval.max_users (ranking.subset_rows).
    keep = ranking_eval.subset_rows(len(getattr(source.split, split)),
                                    int(cfg.eval.max_users), int(cfg.seed))
    picks = np.flatnonzero(np.isin(corpus.rows, keep))
    prompts, masks, targets, histories = [], [], [], []
    for i in picks:
      doc = corpus[int(i)]
      ex = encoding.encode_document(doc, task.tokenizer, add_bos=True, add_eos=False)
      user_mask, _ = calrec_pairs.joint_masks(ex, str(cfg.calrec.user_tokens), task.item_len)
      prompts.append(ex["tokens"][:task.seq_len])
      masks.append(user_mask[:task.seq_len].astype(np.int32))
      _, history, target, _ = corpus.example(int(i))
      targets.append(target)
      histories.append(np.unique(history))
    users = calrec_eval.EvalUsers(prompts=prompts, user_masks=masks,
                                  targets=np.asarray(targets, np.int64), histories=histories,
                                  users_total=int(source.data.num_users))
    self._cache[split] = users
    return users


def default_config() -> ml_collections.ConfigDict:
  """The lm task's blocks (model, text, lm, eval) plus CALRec's `calrec` block and evaluators."""
  config = lm_task.default_config()
  config.calrec = ml_collections.ConfigDict(dict(
      template="calrec",    # the one template of the joint sequence (its target must be
                            # '{target}' alone); recjax.text.templates.
      window=0,             # pairs per training sequence: 0 = every prefix (every position
                            # >= 1); N = the last N positions of each training sequence.
      user_tokens="last",   # v_U pools: "last" = the last prompt token alone (recommended:
                            # mean pooling collapses v_U and L_UT stays at chance,
                            # docs/benchmarks.md "CALRec's user tower"); "prompt" = every
                            # token after BOS before the next item (template words +
                            # history); "history_items" = only the history items' tokens.
                            # [open in the paper]
      item_len=0,           # item-alone row: tokens after BOS; 0 = the longest item text.
      pool_layer="final",   # hidden states pooled: "final" (final-normed, the LM head's
                            # input; recommended) or a block index (-1 = the last block's
                            # output before the final norm). [open]
      w_nig=0.8,            # weight of L_NIG (next-item generation). The digest's form is
      w_tt=0.1,             # (1-a-b) L_NIG + a L_TT + b L_UT; a, b are [open]: 0.1 each here.
      w_ut=0.1,             # 0 switches a loss off (w_tt = w_ut = 0: no item-alone rows).
      temperature=0.05,     # InfoNCE: cosine similarity / temperature. [open]; 0.05-0.1.
      bidirectional=True,   # InfoNCE both ways (query->key and key->query, CLIP-style).
  ))
  config.eval.evaluators = "dense,bm25"  # dense | bm25 | constrained | perplexity (name@N).
  config.eval.ks = (1, 5, 10, 20)      # cut-offs of recall@K, ndcg@K, mrr@K.
  config.eval.exclude_history = False  # drop the user's history items from every ranking
                                       # (a target in the history then counts as a miss).
  config.eval.max_users = 500          # evaluated users per domain, a fixed random subset
                                       # (SASRec's with the same seed); 0 = all (generation
                                       # costs K decodes per user).
  config.eval.domains = ""             # domains of a mixture evaluated (dataset names or
                                       # tags, comma-separated); "" = every domain.
  config.eval.num_generations = 10     # bm25: generations per user; constrained: beams.
  config.eval.generation = "sample"    # bm25: "sample" (temperature sampling) or "beam".
  config.eval.temperature = 1.0        # bm25 sampling temperature.
  config.eval.bm25_top_k = 100         # items BM25 retrieves per generation before merging.
  config.eval.corpora = "histories"    # perplexity evaluator only (lm task's meaning).
  return config

