"""GLM blank-infilling pre-training of the LLM backbone on entity documents (RecSysLLM), as a
trainer Task.

Training data: the documents `config.text` renders from `config.data` (its templates: profiles,
P5 prompts, item text, ...; or `config.text.mixture`, or `config.lm.text_file`), each corrupted
by GLM's blank infilling with RecSysLLM's entity-aware spans and 2D positions
(recjax.text.infilling, knobs in `config.text.glm`) and packed into rows of `text.seq_len`
tokens. Documents are rendered to at most `glm_corpus.document_tokens` tokens so that the
corrupted example (2 more tokens per span) fits a row. With `glm_corpus.behaviour` each user
document shows a long-, medium- or short-term window of its history (RecSysLLM's behaviour
sampling, recjax.text.behaviour).

Loss: cross-entropy of Part B (`objectives.glm.infilling_loss`): Part A attends
bidirectionally within its example, Part B to Part A and causally to itself; inter-positions
drive RoPE and intra-positions the backbone's second learned position table, which the task
adds (`num_extra_positions` = `text.seq_len`) when `text.glm.positions="2d"` and the model
config has none.

Evaluators (`config.eval.evaluators`): `infilling` (recjax/eval/infilling.py), the infilling
loss, perplexity and accuracy of Part B on held-out documents of each corpus in
`config.eval.corpora` (as for the lm task: `histories`, `items`, `NAME=PATH`), corrupted with a
fixed seed; `perplexity`, the lm task's causal perplexity of the same corpora.

Starting points (the trainer's restore order): the workdir's own checkpoint > `init_from.path`
naming another glm workdir (parameters only) or a local Hugging Face directory (weights and
tokenizer, as in the lm task; the intra-position table, which no HF model has, starts at zero so
the first step sees the checkpoint's own function of the inter positions) > scratch.
Everything else (tokenizer training, LoRA, eval corpora) is the lm task's (`recjax.tasks.lm`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import ml_collections
from flax import nnx

from recjax.eval import infilling as infilling_eval
from recjax.models import hf_checkpoint
from recjax.models import llm
from recjax.objectives import glm as glm_loss
from recjax.tasks import lm as lm_task
from recjax.text import behaviour as behaviour_lib
from recjax.text import pipeline
from recjax.text.corpora import TextFileCorpus

FEATURES = lm_task.GLM_FEATURES


class GLMTask(lm_task.LMTask):
  """GLM blank-infilling pre-training; see the module docstring."""

  name = "GLM"
  # An lm workdir has no intra-position table: init_from it keeps the fresh one.
  fresh_parameters = ("extra_position_embedding",)
  results_heading = "blank-infilling perplexity (Part B) per evaluation corpus"

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
    objective = str(config.text.get("objective", "glm"))
    if objective != "glm":
      raise ValueError(f"config.text.objective={objective!r}: the glm task trains objective "
                       "'glm'; use task 'lm' for a causal LM")
    self.glm = self._glm_block(config)
    self.behaviour = (behaviour_lib.BehaviourConfig.from_config(config.glm_corpus)
                      if bool(config.glm_corpus.behaviour) else None)
    super().__init__(config, workdir)

  @staticmethod
  def _glm_block(config: ml_collections.ConfigDict):
    from recjax.text import infilling  # pylint: disable=g-import-not-at-top
    return infilling.GLMConfig.from_config(config.text.get("glm"))

  def _evaluator_factories(self) -> dict[str, Any]:
    factories = dict(super()._evaluator_factories())
    factories["infilling"] = lambda every: infilling_eval.InfillingEvaluator(
        self._eval_corpora, self._infilling_host_batches, int(self.config.eval.batch_size),
        every)
    return factories

  # --- Set-up ---------------------------------------------------------------------------------

  def document_tokens(self) -> int:
    """Tokens a rendered document may have: `glm_corpus.document_tokens`, or (0) seq_len less
    room for ~2 tokens per expected span (longer results are cut by the transform)."""
    budget = int(self.config.glm_corpus.document_tokens)
    if budget <= 0:
      ratio = max(self.glm.mask_ratio, self.glm.sentence_ratio)
      budget = math.floor(self.seq_len / (1.0 + 2.0 * ratio / self.glm.mean_span))
    if not 1 <= budget <= self.seq_len:
      raise ValueError(f"config.glm_corpus.document_tokens={budget} must be in [1, "
                       f"text.seq_len={self.seq_len}] (0: automatic)")
    return budget

  def _training_corpus(self, tokenizer):
    if self.config.lm.text_file:
      if self.behaviour is not None:
        raise ValueError("config.glm_corpus.behaviour samples history windows of rendered "
                         "user documents; set it to False with config.lm.text_file")
      return TextFileCorpus(self.config.lm.text_file)
    rendered = self.config.copy_and_resolve_references()
    rendered.text.seq_len = self.document_tokens()  # the budget build_corpus renders to
    corpus = pipeline.build_corpus(rendered, "train", tokenizer)
    if self.behaviour is not None:
      corpus = behaviour_lib.BehaviourSampled(corpus, self.behaviour, int(self.config.seed))
    if tokenizer is not None:
      self._datasets_corpus = corpus
    return corpus

  def _model_config(self) -> llm.LLMConfig:
    cfg = super()._model_config()
    if self.glm.positions == "2d":
      if not cfg.num_extra_positions:
        cfg = dataclasses.replace(cfg, num_extra_positions=self.seq_len)
      elif cfg.num_extra_positions < self.seq_len:
        raise ValueError(f"config.model.overrides.num_extra_positions="
                         f"{cfg.num_extra_positions} is below text.seq_len={self.seq_len}: "
                         "intra-positions go up to seq_len (0: the task sets it)")
    return cfg

  @property
  def table_columns(self) -> list[str]:
    return [f"{c.name}/infill_ppl" for c in self._eval_corpora("test")]

  # --- Task interface -------------------------------------------------------------------------

  def pretrained_state(self, model: llm.LLM) -> nnx.State | None:
    """The HF checkpoint's weights (None without one); the intra-position table is zero."""
    if not self.hf_dir:
      return None
    shardings = jax.tree.map(lambda x: x.sharding, nnx.state(model, nnx.Param))
    base = dataclasses.replace(self.model_config, num_extra_positions=0)
    nnx.update(model, nnx.state(hf_checkpoint.load_hf_checkpoint(self.hf_dir, base,
                                                                 shardings=shardings)))
    table = model.extra_position_embedding
    if table is not None:
      table.set_value(table.get_value() * 0)  # keeps the array's sharding
    return nnx.state(model, nnx.Param)

  def loss(self, model: llm.LLM, batch, rngs: nnx.Rngs):
    del rngs  # the backbone has no dropout
    logits = model(batch["tokens"], **glm_loss.model_kwargs(batch)).logits
    return glm_loss.infilling_loss(logits, batch["targets"], batch["loss_mask"])

  # --- Evaluation helpers ---------------------------------------------------------------------

  def _infilling_host_batches(self, documents, rows: int):
    """GLM host batches of `documents` (fixed spans: seeded by config.seed and position)."""
    config = pipeline.PipelineConfig(
        seq_len=self.seq_len, batch_size=rows, pack=bool(self.config.text.pack), shuffle=False,
        seed=int(self.config.seed), num_epochs=1, drop_remainder=False, even_shards=False,
        objective="glm", glm=self.glm)
    for batch in pipeline.make_text_dataset(documents, self.tokenizer, config):
      yield {k: batch[k] for k in FEATURES}


def default_config() -> ml_collections.ConfigDict:
  """The lm task's model/text/lm/eval blocks with the glm objective, plus `glm_corpus`."""
  config = lm_task.default_config()
  config.text.objective = "glm"  # the glm task trains only this (text.glm: its knobs)
  config.eval.evaluators = "infilling"  # infilling (Part-B loss/ppl/accuracy) and/or perplexity
  config.glm_corpus = ml_collections.ConfigDict(dict(
      document_tokens=0,  # most tokens of a rendered document, leaving room for the 2 tokens
                          # per span the corruption adds; 0 = seq_len / (1 + 2 * max(mask_ratio,
                          # sentence_ratio) / mean_span) (465 of 512 at the defaults).
      behaviour=True,     # RecSysLLM's behaviour sampling of user documents' history windows
                          # (recjax.text.behaviour); needs a single dataset. Recommended: True.
      long_rate=0.1,      # share of documents with the long-term window (all items that fit
                          # text.max_history_items and the budget). RecSysLLM: 0.1.
      medium_rate=0.3,    # share with the medium-term window (<= medium_items). RecSysLLM: 0.3.
      short_rate=0.6,     # share with the short-term window (<= short_items). RecSysLLM: 0.6.
      medium_items=20,    # most recent items of a medium-term window. 20.
      short_items=5,      # most recent items of a short-term window. 5.
  ))
  return config
