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

from absl import logging
import jax
import ml_collections
import numpy as np
from flax import nnx

from recjax.eval import infilling as infilling_eval
from recjax.eval import p5 as p5_eval
from recjax.models import hf_checkpoint
from recjax.models import llm
from recjax.objectives import glm as glm_loss
from recjax.tasks import lm as lm_task
from recjax.text import behaviour as behaviour_lib
from recjax.text import encoding
from recjax.text import pipeline
from recjax.text import templates as templates_lib
from recjax.text import user_corpus
from recjax.text.corpora import TextFileCorpus

FEATURES = lm_task.GLM_FEATURES


class GLMTask(lm_task.LMTask):
  """GLM blank-infilling pre-training; see the module docstring."""

  name = "GLM"
  # An lm workdir has no intra-position table: init_from it keeps the fresh one.
  fresh_parameters = ("extra_position_embedding",)

  def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None):
    objective = str(config.text.get("objective", "glm"))
    if objective != "glm":
      raise ValueError(f"config.text.objective={objective!r}: the glm task trains objective "
                       "'glm'; use task 'lm' for a causal LM")
    self.glm = self._glm_block(config)
    self._p5_cache: dict[str, list[p5_eval.Example]] = {}
    self._p5_corpora: dict[tuple[str, str], Any] = {}
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
    p5 = self.config.eval.p5
    factories["p5"] = lambda every: p5_eval.P5Evaluator(
        self._p5_examples, self._p5_answers(), dynamic=self.glm.part_b_intra == "entity",
        num_beams=int(p5.num_beams), ks=tuple(int(k) for k in str(p5.ks).split(",")),
        max_new_tokens=int(p5.max_new_tokens), batch_size=int(self.config.eval.batch_size),
        every_steps=every)
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
  def results_heading(self) -> str:
    names = {e.name for e in self.evaluators}
    parts = (["blank-infilling perplexity (Part B) per evaluation corpus"] if "infilling" in names
             else []) + (["P5 families on seen and unseen prompts"] if "p5" in names else [])
    return "; ".join(parts) or "GLM"

  @property
  def table_columns(self) -> list[str]:
    names = {e.name for e in self.evaluators}
    columns = []
    if "infilling" in names:
      columns += [f"{c.name}/infill_ppl" for c in self._eval_corpora("test")]
    if "p5" in names:  # one headline figure per family, prompt group and kind of answer
      k = max(int(x) for x in str(self.config.eval.p5.ks).split(","))
      headline = {"rating": "rmse", "item": f"hr@{k}", "yesno": "accuracy", "text": "rougeL"}
      seen = dict.fromkeys((e.family, "unseen" if e.held_out else "seen", e.kind)
                           for e in self._p5_examples("test"))
      columns += [f"p5/{f}/{g}/{headline[kind]}" for f, g, kind in seen]
    return columns

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

  def _p5_answers(self) -> p5_eval.Answers:
    corpus = self._rendered_corpus()
    if not isinstance(corpus, user_corpus.UserCorpus):
      raise ValueError("the p5 evaluator needs one dataset (config.data), not a mixture or "
                       "a text file")
    vocab = self.tokenizer.vocab_size
    encode = lambda text: list(self.tokenizer.encode(text).ids)
    ratings = corpus.data.ratings
    values = [] if ratings is None else [f"{float(v):g}" for v in np.unique(ratings)]
    return p5_eval.Answers(
        item_tokens=[[]] + [encode(t) for t in corpus.catalogue.texts[1:]], encode=encode,
        decode=lambda ids: self.tokenizer.decode([int(i) for i in ids if 0 <= int(i) < vocab],
                                                 skip_special=True),
        rating_values=values, eop=self._special_ids().eop, pad=int(self.tokenizer.pad_id))

  def _special_ids(self):
    from recjax.text import infilling  # pylint: disable=g-import-not-at-top
    return infilling.SpecialIds.from_tokenizer(self.tokenizer)

  def p5_corpus(self, split: str, family: str) -> user_corpus.UserCorpus | None:
    """Every prompt of a P5 family for the users of `split` (each user under every template
    of the family, seen and held-out), or None when the data lacks what the family needs."""
    key = (split, family)
    if key not in self._p5_corpora:
      cfg = self.config
      if family not in templates_lib.P5_FAMILIES:
        raise ValueError(f"config.eval.p5.families: unknown family {family!r}; P5 families: "
                         f"{templates_lib.P5_FAMILIES}")
      corpus = self._rendered_corpus()
      try:
        self._p5_corpora[key] = user_corpus.UserCorpus(
            corpus.data, corpus.split, templates=f"{family}:all", part=split,
            catalogue=corpus.catalogue, tokenizer=self.tokenizer,
            max_tokens=self._prompt_budget(corpus.catalogue),
            max_history_items=int(cfg.text.max_history_items),
            num_candidates=int(cfg.text.num_candidates), domain=corpus.domain,
            template_choice="all", seed=int(cfg.seed))
      except ValueError as e:  # the data lacks what every template of the family needs
        logging.info("p5 evaluator: skipping family %s: %s", family, e)
        self._p5_corpora[key] = None
    return self._p5_corpora[key]

  def _p5_examples(self, split: str) -> list[p5_eval.Example]:
    """The evaluated P5 prompts of `split`: for each family of `eval.p5.families` the data
    supports, `eval.p5.max_users` users (a fixed random subset) under every template of the
    family, seen and held-out."""
    if split in self._p5_cache:
      return self._p5_cache[split]
    from recjax.text import infilling  # pylint: disable=g-import-not-at-top
    seed, p5 = int(self.config.seed), self.config.eval.p5
    ids = self._special_ids()
    out = []
    for family in (f.strip() for f in str(p5.families).split(",") if f.strip()):
      users = self.p5_corpus(split, family)
      if users is None:
        continue
      n, per = users.num_base_examples, len(users.templates)
      limit = int(p5.max_users)
      base = (np.arange(n) if not limit or n <= limit else
              np.sort(np.random.default_rng([seed, n]).choice(n, limit, False)))
      for index in (int(b) * per + t for b in base for t in range(per)):
        doc = users[index]
        template = templates_lib.BY_NAME[doc.meta["template"]]
        kind = p5_eval.answer_kind(template.target)
        prompt = infilling.answer_prompt(encoding.encode_document(doc, self.tokenizer), ids,
                                         self.glm.positions)
        ex = p5_eval.Example(prompt=prompt, family=family, template=template.name,
                             held_out=template.held_out, kind=kind,
                             target_text=doc.meta["target_text"],
                             target_item=int(doc.meta["target_item"]), index=index,
                             user=int(doc.meta["user"]))
        if kind == "item":
          if "candidates" in template.fields:
            ex.candidates = np.array([s.item for s in doc.spans
                                      if s.role in ("candidate", "target")], np.int64)
          else:
            try:
              ex.negatives = users.sample_unseen(int(doc.meta["user"]), int(p5.num_negatives),
                                                 np.random.default_rng([seed, index]))
            except ValueError as e:  # a catalogue too small for P5's 99 negatives
              raise ValueError(
                  f"config.eval.p5.num_negatives={p5.num_negatives}: {e} (the catalogue has "
                  f"{users.catalogue.num_items} items); lower it") from e
        out.append(ex)
    if not out:
      raise ValueError(f"config.eval.p5.families={p5.families!r}: the data supports none of "
                       "them (see the skipped templates in the log)")
    self._p5_cache[split] = out
    return out

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
  # infilling (Part-B loss/ppl/accuracy), perplexity (causal), p5 (every P5 family's metrics on
  # seen and unseen prompts, recjax/eval/p5.py; for multitask fine-tuning).
  config.eval.evaluators = "infilling"
  config.eval.p5 = ml_collections.ConfigDict(dict(
      families="rating,sequential,direct,explanation,review",  # P5 families evaluated (those
                          # whose data field is missing are skipped, e.g. rating w/o ratings).
      max_users=200,      # users per family (a fixed random subset), each under every template
                          # of the family; 0 = all. Evaluation cost grows with it.
      num_negatives=99,   # sampled unseen items ranked with the target (P5: 99).
      num_beams=20,       # beams of the full-catalogue constrained search (>= the largest K).
      ks="5,10",          # cut-offs of hr@K / ndcg@K (P5: 5,10).
      max_new_tokens=32,  # longest generated explanation/summary (the catalogue search runs
                          # to the longest item text instead).
  ))
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
