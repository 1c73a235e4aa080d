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

Evaluation (`evaluate`): loss and perplexity per corpus in `config.eval.corpora`:
- `histories`: the evaluation split's users, rendered by the templates (`eval.templates`) with
  the held-out next item written as the answer. `histories/ppl` counts every token,
  `histories/target_ppl` only the answer's tokens (the next item's text given the history).
  For a mixture there is one such corpus per domain (`histories_<domain>`).
- `items`: one document per catalogue item (its text alone).
- `NAME=PATH`: a plain text file, one document per non-empty line.
Every process evaluates every document, so the metrics are identical on all of them.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import re
from typing import Any, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from recjax.models import hf_checkpoint
from recjax.models import llm
from recjax.models import lora
from recjax.text import pipeline
from recjax.text import render
from recjax.train import sharding as shard_lib

LOSS_ON = ("all", "target")
# Features of a packed batch the LM reads; the pipeline's entity features stay on the host.
FEATURES = ("tokens", "segment_ids", "positions", "loss_mask")
TOKENIZER_FILE = "tokenizer.model"
# LLMConfig fields `model.overrides` may change on an imported HF checkpoint (numerics and
# execution); any other field would contradict the checkpoint and is ignored.
HF_OVERRIDABLE = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention_impl")


class TextFileCorpus:
  """Plain documents (loss on every token), one per non-empty line of a UTF-8 text file."""

  def __init__(self, path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
      self.lines = [line.strip() for line in f if line.strip()]
    if not self.lines:
      raise ValueError(f"text file {path} has no non-empty line")
    self.path = str(path)

  def __len__(self) -> int:
    return len(self.lines)

  def __getitem__(self, index: int) -> render.Document:
    return render.Document(self.lines[index], (), 0, meta={"index": int(index)})


class _WithAnswer:
  """Evaluation prompts of a `UserCorpus` with the held-out answer appended as the target."""

  def __init__(self, corpus: render.UserCorpus):
    self.corpus = corpus

  def __len__(self) -> int:
    return len(self.corpus)

  def __getitem__(self, index: int) -> render.Document:
    doc = self.corpus[index]
    return render.Document(doc.text + doc.meta["target_text"], doc.spans, len(doc.text),
                           meta=doc.meta)


class _Subset:
  """The documents of `corpus` at `indices`."""

  def __init__(self, corpus, indices: np.ndarray):
    self.corpus, self.indices = corpus, indices

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> render.Document:
    return self.corpus[int(self.indices[index])]


@dataclasses.dataclass
class EvalCorpus:
  """A named evaluation corpus; `batches` caches its host batches once built."""

  name: str
  documents: Any
  has_answer: bool = False  # documents end in a template answer (target_* metrics)
  batches: list[dict[str, np.ndarray]] | None = None


class LMTask:
  """Trains the LLM backbone with a causal LM loss; see the module docstring."""

  name = "LM"
  results_heading = "perplexity per evaluation corpus"  # printed by recjax.main

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
    """Builds the training corpus, the tokenizer and the model config.

    With `lm.tokenizer_vocab_size > 0` a SentencePiece model is trained into
    `<workdir>/tokenizer.model` (or reused when present) and `config.text.tokenizer` is set to
    its path, so the config written to the workdir names the tokenizer actually used. With
    `model.hf_checkpoint` the tokenizer is the checkpoint's `tokenizer.json` instead.
    """
    if config.lm.loss_on not in LOSS_ON:
      raise ValueError(f"config.lm.loss_on='{config.lm.loss_on}' is unknown; choose from "
                       f"{LOSS_ON}")
    self.config = config
    self.seq_len = int(config.text.seq_len)
    self._datasets_corpus = None  # the rendered training corpus (for evaluation's data/split)
    self._resolve_tokenizer(workdir)
    self.tokenizer = pipeline.build_tokenizer(config.text)
    self.train_corpus = self._training_corpus(self.tokenizer)
    self.model_config = self._model_config()
    rank = int(config.model.lora.rank)
    self.trainable = lora.LoRAParam if rank > 0 else nnx.Param
    self.steps_per_epoch = self._estimate_steps_per_epoch()
    self._eval_cache: dict[str, list[EvalCorpus]] = {}

  # --- Set-up ---------------------------------------------------------------------------------

  def _resolve_tokenizer(self, workdir: str | None) -> None:
    hf_dir = self.config.model.hf_checkpoint
    if hf_dir:
      if not os.path.isdir(hf_dir):
        raise FileNotFoundError(f"config.model.hf_checkpoint={hf_dir!r} is not a directory")
      for name in ("config.json", "tokenizer.json"):
        if not os.path.isfile(os.path.join(hf_dir, name)):
          raise FileNotFoundError(
              f"config.model.hf_checkpoint={hf_dir!r} has no {name} (expected a local Hugging "
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
    _share_from_process_zero(path, lambda: self._train_tokenizer(path, vocab))
    self.config.text.tokenizer = str(path)

  def _train_tokenizer(self, path: pathlib.Path, vocab_size: int) -> None:
    from recjax import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
    corpus = self._training_corpus(None)
    limit = int(self.config.lm.tokenizer_max_documents)
    n = len(corpus) if not limit else min(limit, len(corpus))
    picks = np.sort(np.random.default_rng(self.config.seed).permutation(len(corpus))[:n])
    texts = [corpus[int(i)].text for i in picks]
    for catalogue in self._catalogues(corpus):
      texts += catalogue.texts[1:]
    logging.info("training a %d-piece SentencePiece model on %d texts into %s", vocab_size,
                 len(texts), path)
    tokenizer_lib.train_sentencepiece(texts, path, vocab_size, seed=int(self.config.seed))

  def _training_corpus(self, tokenizer):
    if self.config.lm.text_file:
      return TextFileCorpus(self.config.lm.text_file)
    corpus = pipeline.build_corpus(self.config, "train", tokenizer)
    if tokenizer is not None:
      self._datasets_corpus = corpus
    return corpus

  @staticmethod
  def _catalogues(corpus) -> list[Any]:
    if hasattr(corpus, "domains"):
      return [d.catalogue for d in corpus.domains if d.catalogue is not None]
    return [corpus.catalogue] if hasattr(corpus, "catalogue") else []

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
    if cfg.hf_checkpoint:
      ignored = sorted(set(overrides) - set(HF_OVERRIDABLE))
      if ignored:
        logging.warning("config.model.hf_checkpoint is set: model.overrides %s are ignored "
                        "(only %s apply)", ignored, HF_OVERRIDABLE)
      base = hf_checkpoint.load_hf_config(
          cfg.hf_checkpoint, **{k: v for k, v in overrides.items() if k in HF_OVERRIDABLE})
      from recjax import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
      own = tokenizer_lib.load_tokenizer(self.config.text.tokenizer).vocab_size
      if own > base.vocab_size:
        raise ValueError(f"{self.config.text.tokenizer} defines {own} ids but the checkpoint "
                         f"{cfg.hf_checkpoint} embeds only {base.vocab_size}: the tokenizer "
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
        worker_count=int(self.config.text.worker_count) if train else 0)

  def _estimate_steps_per_epoch(self) -> int:
    """Batches in one pass, from the mean length of up to 256 documents (packing is dense)."""
    n = len(self.train_corpus)
    sample = np.unique(np.linspace(0, n - 1, min(n, 256)).astype(np.int64))
    lengths = [min(len(render.encode_document(self.train_corpus[int(i)], self.tokenizer)
                       ["tokens"]), self.seq_len) for i in sample]
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
      source = corpus.data.summary()
    lora_rank = int(self.config.model.lora.rank)
    model = (f"HF checkpoint {self.config.model.hf_checkpoint}"
             if self.config.model.hf_checkpoint else self.config.model.preset)
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
    """The `model.hf_checkpoint` weights on the shardings of `model` (None without one).

    The trainer calls this on a fresh run only: a checkpoint in the workdir wins.
    """
    path = self.config.model.hf_checkpoint
    if not path:
      return None
    shardings = jax.tree.map(lambda x: x.sharding, nnx.state(model, nnx.Param))
    return nnx.state(hf_checkpoint.load_hf_checkpoint(path, self.model_config,
                                                      shardings=shardings))

  def train_data(self, process_index: int, process_count: int):
    batch = int(self.config.train.batch_size)
    if batch % process_count:
      raise ValueError(f"train.batch_size={batch} is not divisible by {process_count} processes")
    ds = pipeline.make_text_dataset(self.train_corpus, self.tokenizer,
                                    self._pipeline_config(batch // process_count, train=True),
                                    shard_index=process_index, shard_count=process_count)
    return ds.map(lambda b: {k: b[k] for k in FEATURES})

  def loss(self, model: llm.LLM, batch: Mapping[str, jax.Array], rngs: nnx.Rngs):
    del rngs  # the backbone has no dropout
    nll, counts = token_losses(model, batch)
    weights = counts if self.config.lm.loss_on == "all" else _target_weights(batch)
    return jnp.sum(jnp.where(weights, nll, 0.0)), jnp.sum(weights.astype(jnp.float32)), {}

  def evaluate(self, model: llm.LLM, split: str, mesh) -> dict[str, float]:
    if split not in ("valid", "test"):
      raise ValueError(f"split must be 'valid' or 'test', got '{split}'")
    graphdef, state = nnx.split(model)
    out = {}
    for corpus in self._eval_corpora(split):
      sums = np.zeros(4, np.float64)
      for batch in self._eval_batches(corpus, mesh):
        sums += np.asarray(_eval_sums(graphdef, state, batch, mesh=mesh), np.float64)
      nll, count, target_nll, target_count = sums
      loss = nll / max(count, 1.0)
      out[f"{corpus.name}/loss"] = loss
      out[f"{corpus.name}/ppl"] = math.exp(min(loss, 700.0))
      out[f"{corpus.name}/tokens"] = count
      if corpus.has_answer and target_count:
        target_loss = target_nll / target_count
        out[f"{corpus.name}/target_loss"] = target_loss
        out[f"{corpus.name}/target_ppl"] = math.exp(min(target_loss, 700.0))
    return out

  # --- Evaluation helpers ---------------------------------------------------------------------

  def _eval_corpora(self, split: str) -> list[EvalCorpus]:
    if split in self._eval_cache:
      return self._eval_cache[split]
    corpora = []
    for entry in (c.strip() for c in str(self.config.eval.corpora).split(",") if c.strip()):
      if entry == "histories":
        corpora += [EvalCorpus(name, _WithAnswer(c), has_answer=True)
                    for name, c in self._history_corpora(split)]
      elif entry == "items":
        sources = self._item_sources()
        for tag, data, catalogue in sources:
          name = "items" if len(sources) == 1 else f"items_{_slug(tag)}"
          corpora.append(EvalCorpus(name, render.ItemCorpus(data, catalogue, domain=tag)))
      elif "=" in entry:
        name, path = (s.strip() for s in entry.split("=", 1))
        corpora.append(EvalCorpus(name, TextFileCorpus(path)))
      else:
        raise ValueError(f"config.eval.corpora: unknown corpus {entry!r}; use histories, items "
                         "or NAME=PATH")
    limit = int(self.config.eval.max_documents)
    for corpus in corpora:
      n = len(corpus.documents)
      if limit and n > limit:
        # A fixed random subset (the same for every checkpoint and process).
        pick = np.sort(np.random.default_rng([self.config.seed, n]).choice(n, limit, False))
        corpus.documents = _Subset(corpus.documents, pick)
    self._eval_cache[split] = corpora
    return corpora

  def _rendered_corpus(self):
    """The rendered training corpus (built from config.data even for text-file training)."""
    if self._datasets_corpus is None:
      self._datasets_corpus = pipeline.build_corpus(self.config, "train", self.tokenizer)
    return self._datasets_corpus

  def _history_corpora(self, split: str) -> Iterator[tuple[str, render.UserCorpus]]:
    corpus = self._rendered_corpus()
    templates = self.config.eval.templates or self._answer_templates()
    if hasattr(corpus, "domains"):
      for domain in corpus.domains:
        yield (f"histories_{_slug(domain.name)}",
               domain.eval_corpus(split, templates=templates,
                                  max_tokens=self._prompt_budget(domain.catalogue)))
    else:
      yield "histories", render.UserCorpus(
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
    if hasattr(corpus, "domains"):
      return [(d.name, d.data, d.catalogue) for d in corpus.domains]
    return [(corpus.domain, corpus.data, corpus.catalogue)]

  def _eval_batches(self, corpus: EvalCorpus, mesh) -> Iterator[dict[str, jax.Array]]:
    """Device batches of the whole corpus; the last one is padded with empty rows."""
    num_data = mesh.shape["data"] * mesh.shape["fsdp"]
    batch_size = -(-int(self.config.eval.batch_size) // num_data) * num_data
    if corpus.batches is None:
      ds = pipeline.make_text_dataset(corpus.documents, self.tokenizer,
                                      self._pipeline_config(batch_size, train=False))
      corpus.batches = []
      for batch in ds:
        rows = len(batch["tokens"])
        corpus.batches.append({k: np.pad(batch[k], ((0, batch_size - rows), (0, 0)))
                               for k in FEATURES})
    sharding = shard_lib.batch_sharding(mesh)
    for batch in corpus.batches:
      yield {k: jax.make_array_from_callback(v.shape, sharding, lambda idx, v=v: v[idx])
             for k, v in batch.items()}


def _next(x: jax.Array, fill: int = 0) -> jax.Array:
  """x shifted left by one position along the sequence: out[:, t] = x[:, t + 1]."""
  return jnp.concatenate([x[:, 1:], jnp.full_like(x[:, :1], fill)], axis=1)


def token_losses(model: llm.LLM, batch: Mapping[str, jax.Array]):
  """Next-token losses of packed rows.

  Returns:
    nll: float32 [batch, seq_len], -log p(token t+1 | tokens <= t of its document) at t.
    counts: bool, same shape: where token t+1 is a real token of the same document as token t
      (never at the last position).
  """
  tokens, segments = batch["tokens"], batch["segment_ids"]
  # Logits of every position, targets shifted instead: slicing the logits would make the
  # backward pass pad and transpose a [batch, seq_len, vocab] array (slow on XLA:CPU).
  logits = model(tokens, positions=batch["positions"], segment_ids=segments).logits
  next_segments = _next(segments)
  counts = (next_segments == segments) & (next_segments > 0)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                        _next(tokens))
  return nll, counts


def _target_weights(batch: Mapping[str, jax.Array]) -> jax.Array:
  """Where the next token is in its document's answer (the template target)."""
  segments = batch["segment_ids"]
  next_segments = _next(segments)
  same = (next_segments == segments) & (next_segments > 0)
  return same & (_next(batch["loss_mask"]) > 0)


@functools.partial(jax.jit, static_argnames=("graphdef", "mesh"))
def _eval_sums(graphdef, state, batch, *, mesh):
  """[nll sum, token count, answer nll sum, answer token count] of one batch, replicated."""
  model = nnx.merge(graphdef, state)
  nll, counts = token_losses(model, batch)
  answer = _target_weights(batch)
  sums = jnp.stack([jnp.sum(jnp.where(counts, nll, 0.0)), jnp.sum(counts.astype(jnp.float32)),
                    jnp.sum(jnp.where(answer, nll, 0.0)), jnp.sum(answer.astype(jnp.float32))])
  return jax.lax.with_sharding_constraint(sums, NamedSharding(mesh, PartitionSpec()))


def _slug(name: str) -> str:
  return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def _share_from_process_zero(path: pathlib.Path, create) -> None:
  """Runs `create()` (which writes `path`) on process 0 if `path` is absent, then gives every
  process the same file, also when the workdir is not a shared file system."""
  if jax.process_count() == 1:
    if not path.exists():
      create()
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0 and not path.exists():
    create()
  data = path.read_bytes() if jax.process_index() == 0 else b""
  size = int(multihost_utils.broadcast_one_to_all(np.int64(len(data))))
  buf = np.frombuffer(data, np.uint8) if data else np.zeros(size, np.uint8)
  buf = np.asarray(multihost_utils.broadcast_one_to_all(buf))
  if jax.process_index() != 0 and (not path.exists() or path.read_bytes() != buf.tobytes()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())


def default_config() -> ml_collections.ConfigDict:
  """The model/text/lm/eval blocks of a causal-LM experiment."""
  text = pipeline.default_config()
  del text["batch_size"]  # the global batch is train.batch_size
  return ml_collections.ConfigDict(dict(
      model=dict(
          preset="tiny_llama",  # gin/<preset>.gin architecture, or a path to a .gin file.
          hf_checkpoint="",     # local HF model dir (config.json, *.safetensors, tokenizer.json)
                                # to fine-tune: architecture, weights and tokenizer come from it;
                                # preset, vocab_size, text.tokenizer, lm.tokenizer_vocab_size and
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
      eval=dict(
          corpora="histories,items",  # comma list: histories (held-out next items of the
                                # eval split, as the templates write them), items (item texts),
                                # NAME=PATH (a text file, one document per line).
          templates="",         # templates of `histories`; "" = text.templates with an answer
                                # (calrec if none has one).
          max_documents=1000,   # per corpus: a fixed random subset; 0 = every document.
          batch_size=32,        # rows per evaluation batch (rounded up to the data-parallel
                                # device count).
      ),
  ))
