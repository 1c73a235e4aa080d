"""Causal language modelling of the LLM backbone on recjax text, as a trainer Task.

Training data: documents rendered from `config.data` by `config.text` (templates over one
dataset, or `config.text.mixture` over several), or the lines of a plain text file
(`config.lm.text_file`), tokenized and packed into rows of `config.text.seq_len` tokens with
segment ids and per-document positions (`recjax.text.pipeline`). Attention never crosses a
document boundary inside a packed row.

Loss: token-level cross-entropy of next-token prediction, summed over the target tokens that
count (a token counts when it is in the same document as the token before it; with
`lm.loss_on="target"` it must also be in the template's answer), with weight = the number of
such tokens. The trainer divides once by the total weight: the loss is the mean per token.
With `text.objective="glm"` the training rows are GLM blank-infilling examples instead
(recjax.text.infilling): Part A attends bidirectionally, the loss is on Part B's `targets`
(`objectives.lm.target_token_loss`), inter-positions drive RoPE and intra-positions the
backbone's extra position table (`model.overrides.num_extra_positions`). Evaluation
(perplexity) always reads plain documents, causally.

Evaluators (`config.eval.evaluators`): `perplexity` (recjax/eval/perplexity.py), loss and
perplexity per corpus in `config.eval.corpora`:
- `histories`: the evaluation split's users, rendered by the templates (`eval.templates`) with
  the held-out next item written as the answer. `histories/ppl` counts every token,
  `histories/target_ppl` only the answer's tokens (the next item's text given the history).
  For a mixture there is one such corpus per domain (`histories_<domain>`).
- `items`: one document per catalogue item (its text alone).
- `NAME=PATH`: a plain text file, one document per non-empty line.
- `curriculum` (or one `curriculum/<name>`): the synthetic-data curriculum's held-out corpora per
  modality (recjax.curriculum.corpora.heldout_corpora).
With `config.curriculum.rates` > 0 the training corpus is the curriculum's mixture of modalities
(`recjax.curriculum.corpora.build_curriculum`, already sharded per process).
Every process evaluates every document, so the metrics are identical on all of them.

Starting from a local Hugging Face model directory (config.json, *.safetensors,
tokenizer.json): `config.init_from.path` names it (`config.model.hf_checkpoint` is a deprecated
alias). Architecture, tokenizer and weights then come from it (`pretrained_state`); a recjax
workdir as `init_from.path` is the trainer's business instead.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
from typing import Any, Iterator, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from recjax.curriculum import corpora as curriculum_corpora
from recjax.eval import evaluators as evaluators_lib
from recjax.eval import perplexity as perplexity_eval
from recjax.models import hf_checkpoint
from recjax.models import llm
from recjax.models import lora
from recjax.objectives import lm as lm_loss
from recjax.text import encoding
from recjax.text import infilling
from recjax.text import mixture as mixture_lib
from recjax.text import pipeline
from recjax.text import user_corpus
from recjax.text.corpora import EvalCorpus, Subset, TextFileCorpus, WithAnswer
from recjax.train import multihost
from recjax.train import trainer

LOSS_ON = lm_loss.LOSS_ON
# Features of a packed batch the LM reads; the pipeline's entity features stay on the host.
FEATURES = ("tokens", "segment_ids", "positions", "loss_mask")
# What the glm objective adds (recjax.text.infilling): each token's target, Part A, 2D positions.
GLM_FEATURES = FEATURES + infilling.FEATURES
TOKENIZER_FILE = "tokenizer.model"
# LLMConfig fields `model.overrides` may change on an imported HF checkpoint (numerics and
# execution); any other field would contradict the checkpoint and is ignored.
HF_OVERRIDABLE = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention_impl")


def is_hf_directory(path: str) -> bool:
  """Whether `init_from.path` is a local Hugging Face model directory: a config.json that is not
  a recjax workdir's (those name their task, or hold checkpoints/; the trainer restores them).

  The weights (*.safetensors) are not required here: a run resuming its own checkpoint must not
  need them; a fresh one that lacks them fails in `pretrained_state`, naming the directory.
  """
  return (bool(path) and os.path.isfile(os.path.join(path, "config.json")) and
          not trainer.is_recjax_workdir(path))


class LMTask:
  """Trains the LLM backbone with a causal LM loss; see the module docstring."""

  name = "LM"
  fresh_parameters = ()  # every parameter comes from init_from when it is set
  loss_updates = None  # the loss sets no variable outside the gradient
  results_heading = "perplexity per evaluation corpus"  # printed by recjax.main

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
    """Builds the training corpus, the tokenizer and the model config.

    With `lm.tokenizer_vocab_size > 0` a SentencePiece model is trained into
    `<workdir>/tokenizer.model` (or reused when present) and `config.text.tokenizer` is set to
    its path, so the config written to the workdir names the tokenizer actually used. From a
    Hugging Face directory (`init_from.path`, or the deprecated `model.hf_checkpoint`) the
    tokenizer is the checkpoint's `tokenizer.json` instead.
    """
    if config.lm.loss_on not in LOSS_ON:
      raise ValueError(f"config.lm.loss_on='{config.lm.loss_on}' is unknown; choose from "
                       f"{LOSS_ON}")
    self.config = config
    # The training objective's transform chain (text.objective): causal_lm or glm.
    self.objective = str(config.text.get("objective", "causal_lm"))
    self.hf_dir, self._hf_key = self._hf_directory()
    self.seq_len = int(config.text.seq_len)
    self._datasets_corpus = None  # the rendered training corpus (for evaluation's data/split)
    self._corpus_shards = None  # (index, count) when train_corpus is one process's shard
    self._resolve_tokenizer(workdir)
    self.tokenizer = pipeline.build_tokenizer(config.text)
    self.train_corpus = self._training_corpus(self.tokenizer)
    self.model_config = self._model_config()
    rank = int(config.model.lora.rank)
    self.trainable = lora.LoRAParam if rank > 0 else nnx.Param
    self.steps_per_epoch = self._estimate_steps_per_epoch()
    self._eval_cache: dict[str, list[EvalCorpus]] = {}
    self.evaluators = evaluators_lib.build_evaluators(config.eval.evaluators,
                                                      self._evaluator_factories())

  def _evaluator_factories(self) -> dict[str, Any]:
    """Evaluator name -> factory(every_steps) of the names `config.eval.evaluators` may use."""
    return {"perplexity": lambda every: perplexity_eval.PerplexityEvaluator(
        self._eval_corpora, self._eval_host_batches, int(self.config.eval.batch_size), every)}

  # --- Set-up ---------------------------------------------------------------------------------

  def _hf_directory(self) -> tuple[str, str]:
    """(the Hugging Face directory the model comes from or "", the config key naming it)."""
    alias = str(self.config.model.hf_checkpoint or "")
    path = str(self.config.init_from.path or "")
    if alias:
      logging.warning("config.model.hf_checkpoint is deprecated; use config.init_from.path")
      if path and os.path.abspath(path) != os.path.abspath(alias):
        raise ValueError(f"config.model.hf_checkpoint={alias!r} and config.init_from.path="
                         f"{path!r} name two starting points; set only config.init_from.path")
      return alias, "config.model.hf_checkpoint"
    if is_hf_directory(path):
      return path, "config.init_from.path"
    return "", ""

  def _resolve_tokenizer(self, workdir: str | None) -> None:
    hf_dir = self.hf_dir
    if hf_dir:
      if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"{self._hf_key}={hf_dir!r} is not a directory")
      for name in ("config.json", "tokenizer.json"):
        if not os.path.isfile(os.path.join(hf_dir, name)):
          raise FileNotFoundError(
              f"{self._hf_key}={hf_dir!r} has no {name} (expected a local Hugging "
              "Face model directory: config.json, *.safetensors, tokenizer.json)")
      self.config.text.tokenizer = os.path.join(hf_dir, "tokenizer.json")
      return
    vocab = int(self.config.lm.tokenizer_vocab_size)
    if vocab <= 0:
      return
    if workdir is None:
      # Re-created from a workdir's config.json (recjax.evaluate): the path is recorded there.
      if str(self.config.text.tokenizer).endswith(".model"):
        return
      raise ValueError("config.lm.tokenizer_vocab_size > 0 trains a tokenizer into the "
                       "workdir; pass workdir to build_task")
    path = pathlib.Path(workdir) / TOKENIZER_FILE
    multihost.share_from_process_zero(path, lambda: self._train_tokenizer(path))
    self.config.text.tokenizer = str(path)

  def _train_tokenizer(self, path: pathlib.Path) -> None:
    logging.info("training a %d-piece SentencePiece model into %s",
                 int(self.config.lm.tokenizer_vocab_size), path)
    if curriculum_corpora.enabled(self.config):  # the curriculum's documents and item texts
      from recjax.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
      texts = curriculum_corpora.tokenizer_texts(
          self.config, int(self.config.lm.tokenizer_max_documents))
      tokenizer_lib.train_sentencepiece(texts, path, int(self.config.lm.tokenizer_vocab_size),
                                        seed=int(self.config.seed))
      return
    pipeline.train_tokenizer(self.config, path)  # the recipe `python -m recjax.text show` uses

  def _training_corpus(self, tokenizer):
    if curriculum_corpora.enabled(self.config):
      if self.config.lm.text_file:
        raise ValueError("config.lm.text_file and config.curriculum.rates both name the "
                         "training text; put the file in curriculum.general_file instead")
      # This process's shard of every modality (train_data then reads it unsharded).
      self._datasets_corpus = pipeline.build_corpus(self.config, "train", tokenizer)
      self._corpus_shards = jax.process_index(), jax.process_count()
      return curriculum_corpora.build_curriculum(self.config, tokenizer, self._datasets_corpus,
                                                 *self._corpus_shards)
    if self.config.lm.text_file:
      return TextFileCorpus(self.config.lm.text_file)
    corpus = pipeline.build_corpus(self.config, "train", tokenizer)
    if tokenizer is not None:
      self._datasets_corpus = corpus
    return corpus

  def _model_config(self) -> llm.LLMConfig:
    cfg = self.config.model
    overrides = dict(cfg.overrides.to_dict() if hasattr(cfg.overrides, "to_dict")
                     else cfg.overrides)
    if cfg.dtype:
      overrides["dtype"] = cfg.dtype
    needed = self.tokenizer.vocab_size
    rounded = -(-needed // int(cfg.vocab_multiple)) * int(cfg.vocab_multiple)
    ids = dict(bos_token_id=int(self.tokenizer.bos_id), eos_token_id=int(self.tokenizer.eos_id),
               pad_token_id=int(self.tokenizer.pad_id))
    if self.hf_dir:
      ignored = sorted(set(overrides) - set(HF_OVERRIDABLE))
      if ignored:
        logging.warning("%s is a Hugging Face checkpoint: model.overrides %s are ignored "
                        "(only %s apply)", self._hf_key, ignored, HF_OVERRIDABLE)
      base = hf_checkpoint.load_hf_config(
          self.hf_dir, **{k: v for k, v in overrides.items() if k in HF_OVERRIDABLE})
      from recjax.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
      own = tokenizer_lib.load_tokenizer(self.config.text.tokenizer).vocab_size
      if own > base.vocab_size:
        raise ValueError(f"{self.config.text.tokenizer} defines {own} ids but the checkpoint "
                         f"{self.hf_dir} embeds only {base.vocab_size}: the tokenizer "
                         "does not belong to this model")
      # recjax's special tokens that do not fit get new embedding rows.
      vocab = base.vocab_size if needed <= base.vocab_size else rounded
      return dataclasses.replace(base, vocab_size=vocab, **ids)
    vocab = int(cfg.vocab_size) or rounded
    if vocab < needed:
      raise ValueError(f"config.model.vocab_size={vocab} is smaller than the tokenizer's "
                       f"vocabulary ({needed} ids)")
    overrides.update(vocab_size=vocab, **ids)
    return llm.get_preset(cfg.preset, **overrides)

  def _pipeline_config(self, batch_size: int, train: bool) -> pipeline.PipelineConfig:
    return pipeline.PipelineConfig(
        seq_len=self.seq_len, batch_size=batch_size, pack=bool(self.config.text.pack),
        shuffle=train, seed=int(self.config.seed), num_epochs=None if train else 1,
        drop_remainder=train, even_shards=train,
        worker_count=int(self.config.text.worker_count) if train else 0,
        # Evaluation (perplexity) reads plain documents whatever the training objective.
        objective=self.objective if train else "causal_lm", glm=self._glm_config())

  def _glm_config(self) -> infilling.GLMConfig:
    if self.objective != "glm":
      return infilling.GLMConfig()
    return infilling.GLMConfig.from_config(self.config.text.get("glm"))

  def _estimate_steps_per_epoch(self) -> int:
    """Batches in one pass, from the mean length of up to 256 documents (packing is dense)."""
    n = len(self.train_corpus)
    sample = np.unique(np.linspace(0, n - 1, min(n, 256)).astype(np.int64))
    lengths = [min(len(encoding.encode_document(self.train_corpus[int(i)], self.tokenizer)
                       ["tokens"]), self.seq_len) for i in sample]
    n *= self._corpus_shards[1] if self._corpus_shards else 1  # every process's documents
    rows = math.ceil(float(np.mean(lengths)) * n / self.seq_len)
    return max(1, rows // int(self.config.train.batch_size))

  def summary(self) -> str:
    """One paragraph on the corpus, tokenizer and model."""
    corpus = self.train_corpus
    if isinstance(corpus, TextFileCorpus):
      source = f"text file {corpus.path}"
    elif hasattr(corpus, "describe"):
      source = corpus.describe()
    else:
      source = "\n".join([corpus.data.summary(), *corpus.data.report])
    lora_rank = int(self.config.model.lora.rank)
    model = f"HF checkpoint {self.hf_dir}" if self.hf_dir else self.config.model.preset
    return (f"{source}\ntraining documents: {len(corpus):,} (about {self.steps_per_epoch:,} "
            f"steps per epoch); tokenizer {self.config.text.tokenizer} "
            f"({self.tokenizer.vocab_size:,} ids); model {model}: "
            f"{self.model_config.num_params() / 1e6:.2f}M parameters, vocab "
            f"{self.model_config.vocab_size}, seq_len {self.seq_len}"
            f"{f', LoRA rank {lora_rank}' if lora_rank else ''}")

  @property
  def table_columns(self) -> list[str]:
    """Metrics `recjax.main` prints: perplexity per evaluation corpus."""
    columns = []
    for corpus in self._eval_corpora("test"):
      columns.append(f"{corpus.name}/ppl")
      if corpus.has_answer:
        columns.append(f"{corpus.name}/target_ppl")
    return columns

  # --- Task interface -------------------------------------------------------------------------

  def build_model(self, rngs: nnx.Rngs) -> llm.LLM:
    model = llm.LLM(self.model_config, rngs=rngs)
    cfg = self.config.model.lora
    if int(cfg.rank) > 0:
      targets = tuple(t.strip() for t in str(cfg.targets).split(",") if t.strip())
      lora.add_lora(model, lora.LoRAConfig(rank=int(cfg.rank), alpha=float(cfg.alpha),
                                           targets=targets), rngs=rngs)
    return model

  def pretrained_state(self, model: llm.LLM) -> nnx.State | None:
    """The Hugging Face checkpoint's weights on the shardings of `model` (None without one).

    The trainer calls this on a fresh run only: a checkpoint in the workdir wins.
    """
    if not self.hf_dir:
      return None
    shardings = jax.tree.map(lambda x: x.sharding, nnx.state(model, nnx.Param))
    return nnx.state(hf_checkpoint.load_hf_checkpoint(self.hf_dir, self.model_config,
                                                      shardings=shardings))

  def baselines(self, split: str) -> dict[str, dict[str, float]]:
    del split  # no reference model for perplexity
    return {}

  def train_data(self, process_index: int, process_count: int):
    batch = int(self.config.train.batch_size)
    if batch % process_count:
      raise ValueError(f"train.batch_size={batch} is not divisible by {process_count} processes")
    shard = dict(shard_index=process_index, shard_count=process_count)
    if self._corpus_shards is not None:  # the curriculum corpus is already this process's
      if self._corpus_shards != (process_index, process_count):
        raise ValueError(f"the curriculum corpus was built for process {self._corpus_shards}, "
                         f"not {(process_index, process_count)}")
      shard = dict(shard_index=0, shard_count=1)
    ds = pipeline.make_text_dataset(self.train_corpus, self.tokenizer,
                                    self._pipeline_config(batch // process_count, train=True),
                                    **shard)
    features = GLM_FEATURES if self.objective == "glm" else FEATURES
    return ds.map(lambda b: {k: b[k] for k in features})

  def loss(self, model: llm.LLM, batch: Mapping[str, jax.Array], rngs: nnx.Rngs):
    del rngs  # the backbone has no dropout
    if self.objective == "glm":
      # Part A bidirectional, Part B causal; 2D positions: inter -> RoPE, intra -> the
      # backbone's extra position table (model.num_extra_positions > 0; ignored without one).
      logits = model(batch["tokens"], positions=batch["inter_positions"],
                     segment_ids=batch["segment_ids"], attention_mask_kind="prefix",
                     prefix_mask=batch["prefix_mask"],
                     extra_positions=batch["intra_positions"]).logits
      return lm_loss.target_token_loss(logits, batch["targets"], batch["loss_mask"])
    logits = model(batch["tokens"], positions=batch["positions"],
                   segment_ids=batch["segment_ids"]).logits
    return lm_loss.causal_lm_loss(logits, batch, self.config.lm.loss_on)

  # --- Evaluation helpers ---------------------------------------------------------------------

  def _eval_corpora(self, split: str) -> list[EvalCorpus]:
    if split in self._eval_cache:
      return self._eval_cache[split]
    corpora = []
    for entry in (c.strip() for c in str(self.config.eval.corpora).split(",") if c.strip()):
      if entry == "histories":
        corpora += [EvalCorpus(name, WithAnswer(c), has_answer=True)
                    for name, c in self._history_corpora(split)]
      elif entry == "items":
        sources = self._item_sources()
        for tag, data, catalogue in sources:
          name = "items" if len(sources) == 1 else f"items_{_slug(tag)}"
          corpora.append(EvalCorpus(name, user_corpus.ItemCorpus(data, catalogue, domain=tag)))
      elif entry == "curriculum" or entry.startswith("curriculum/"):
        names = (curriculum_corpora.HELDOUT_NAMES if entry == "curriculum"
                 else (entry[len("curriculum/"):],))
        corpora += curriculum_corpora.heldout_corpora(self.config, self._rendered_corpus(),
                                                      self.tokenizer, split, names)
      elif "=" in entry:
        name, path = (s.strip() for s in entry.split("=", 1))
        corpora.append(EvalCorpus(name, TextFileCorpus(path)))
      else:
        raise ValueError(f"config.eval.corpora: unknown corpus {entry!r}; use histories, items, "
                         "curriculum[/NAME] or NAME=PATH")
    limit = int(self.config.eval.max_documents)
    for corpus in corpora:
      n = len(corpus.documents)
      if limit and n > limit:
        # A fixed random subset (the same for every checkpoint and process).
        pick = np.sort(np.random.default_rng([self.config.seed, n]).choice(n, limit, False))
        corpus.documents = Subset(corpus.documents, pick)
    self._eval_cache[split] = corpora
    return corpora

  def _rendered_corpus(self):
    """The rendered training corpus (built from config.data even for text-file training)."""
    if self._datasets_corpus is None:
      self._datasets_corpus = pipeline.build_corpus(self.config, "train", self.tokenizer)
    return self._datasets_corpus

  def _history_corpora(self, split: str) -> Iterator[tuple[str, user_corpus.UserCorpus]]:
    corpus = self._rendered_corpus()
    templates = self.config.eval.templates or self._answer_templates()
    if isinstance(corpus, mixture_lib.Mixture):
      for domain in corpus.domains:
        yield (f"histories_{_slug(domain.name)}",
               domain.eval_corpus(split, templates=templates,
                                  max_tokens=self._prompt_budget(domain.catalogue)))
    else:
      yield "histories", user_corpus.UserCorpus(
          corpus.data, corpus.split, templates=templates, part=split, catalogue=corpus.catalogue,
          tokenizer=self.tokenizer, max_tokens=self._prompt_budget(corpus.catalogue),
          max_history_items=int(self.config.text.max_history_items),
          num_candidates=int(self.config.text.num_candidates), domain=corpus.domain,
          seed=int(self.config.seed))

  def _answer_templates(self) -> str:
    from recjax.text import templates as templates_lib  # pylint: disable=g-import-not-at-top
    names = [t.name for t in templates_lib.select(self.config.text.templates) if t.has_target]
    return ",".join(names) or "calrec"

  def _prompt_budget(self, catalogue) -> int:
    """Prompt tokens that leave room for the longest item text as the answer."""
    longest = int(catalogue.token_lengths().max()) if catalogue.tokens is not None else 64
    return self.seq_len - min(longest + 8, self.seq_len // 2)

  def _item_sources(self) -> list[tuple[str, Any, Any]]:
    corpus = self._rendered_corpus()
    if isinstance(corpus, mixture_lib.Mixture):
      return [(d.name, d.data, d.catalogue) for d in corpus.domains]
    return [(corpus.domain, corpus.data, corpus.catalogue)]

  def _eval_host_batches(self, documents, rows: int) -> Iterator[dict[str, np.ndarray]]:
    """Packed host batches of `documents`, `rows` rows each (the last one may be shorter)."""
    ds = pipeline.make_text_dataset(documents, self.tokenizer,
                                    self._pipeline_config(rows, train=False))
    for batch in ds:
      yield {k: batch[k] for k in FEATURES}


def _slug(name: str) -> str:
  return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def default_config() -> ml_collections.ConfigDict:
  """The model/text/lm/eval blocks of a causal-LM experiment."""
  text = pipeline.default_config()
  del text["batch_size"]  # the global batch is train.batch_size
  return ml_collections.ConfigDict(dict(
      model=dict(
          preset="tiny_llama",  # gin/<preset>.gin architecture, or a path to a .gin file.
          hf_checkpoint="",     # DEPRECATED alias of init_from.path for a local HF model dir
                                # (config.json, *.safetensors, tokenizer.json). From such a dir
                                # architecture, weights and tokenizer come from it; preset,
                                # vocab_size, text.tokenizer, lm.tokenizer_vocab_size and
                                # overrides other than dtype/param_dtype/scan_layers/remat_policy/
                                # attention_impl are then ignored. A workdir checkpoint wins.
          # LLMConfig fields replacing the preset's, e.g. dict(num_layers=4, hidden_size=256).
          overrides=ml_collections.ConfigDict(),
          vocab_size=0,         # 0 = the tokenizer's ids (with specials) rounded up to
                                # vocab_multiple; otherwise at least that many.
          vocab_multiple=128,   # rounding of the vocabulary (lets 'vocab' shard; 128 for TPUs).
          dtype="",             # compute dtype; "" = the preset's (bfloat16 for real presets).
                                # float32 on CPU: XLA's CPU bfloat16 matmuls are slow.
          lora=dict(
              rank=0,           # 0 = train every parameter; > 0 = train only LoRA adapters
                                # of this rank (the base stays frozen). Typical: 8-64.
              alpha=16.0,       # adapter scale numerator (output scaled by alpha / rank).
              targets="q_proj,k_proj,v_proj,o_proj",  # projections with adapters; also
                                                      # gate_proj, up_proj, down_proj.
          ),
      ),
      text=text,                # corpus rendering and packing; see recjax.text.pipeline.
      lm=dict(
          text_file="",         # plain-text training corpus, one document per non-empty line;
                                # "" = render config.data with config.text.
          tokenizer_vocab_size=0,  # > 0: train a SentencePiece model of this size on the
                                # training corpus into <workdir>/tokenizer.model (reused when
                                # present; text.tokenizer is set to it). 0: use text.tokenizer.
          tokenizer_max_documents=20000,  # training documents the tokenizer learns from
                                # (plus every item text); 0 = all.
          loss_on="all",        # all: every next token of a document (continual
                                # pre-training); target: only the template's answer tokens.
      ),
      # The synthetic-data curriculum (recjax/curriculum/corpora.py, docs/curriculum.md):
      # with a rate > 0 the training corpus is its mixture of modalities instead of config.text.
      curriculum=curriculum_corpora.default_config(),
      eval=dict(
          corpora="histories,items",  # comma list: histories (held-out next items of the
                                # eval split, as the templates write them), items (item texts),
                                # curriculum (the curriculum's held-out corpora per modality,
                                # curriculum/<name>; or one of them, e.g. curriculum/item_text),
                                # NAME=PATH (a text file, one document per line).
          templates="",         # templates of `histories`; "" = text.templates with an answer
                                # (calrec if none has one).
          max_documents=1000,   # per corpus: a fixed random subset; 0 = every document.
          batch_size=32,        # rows per evaluation batch (rounded up to the data-parallel
                                # device count).
          # Comma list of `name` or `name@N` (every N training steps; without @N every
          # train.eval_every_steps): perplexity = loss/ppl per corpus above.
          evaluators="perplexity",
      ),
  ))
