"""P5 multitask evaluation of a GLM model (RecSysLLM): every family, seen and unseen prompts.

An evaluated example is one P5 prompt (recjax.text.templates) for a user of the split, its
answer being the [gMASK] span: the prompt becomes Part A + [gMASK] + EOS, then [sop]
(`text.infilling.answer_prompt`), exactly the layout `text.glm.target_as_gmask` trains. The
answer is scored or generated as Part B, at the mask's inter-position, its intra-positions
static or dynamic (`models.decoding.PartB`; `dynamic` follows `text.glm.part_b_intra`).

Metrics `p5/<family>/<seen|unseen>/<metric>` (seen: training templates; unseen: the held-out
templates, never trained on), by what the template answers:
  {rating}      rmse, mae: the likeliest answer among the rating strings of the training data
                (the same set every template may write), against the held-out rating.
  {target}      sampled<N>_hr@K, sampled<N>_ndcg@K: the target's rank among N + 1 candidates by
                the likelihood of each one's text as the answer, ties counted against it (P5's
                protocol, N = 99 sampled unseen items; the direct family ranks the candidates
                its prompt lists). hr@K, ndcg@K: full-catalogue rank from beam search
                constrained by a trie to the catalogue's item texts + [eop], run to the
                longest item text (every item is reachable); items outside the `num_beams`
                beams rank after them (exact for K <= num_beams).
  {answer}      accuracy: the likelier of "yes" and "no" (direct yes/no prompts).
  {explanation} {summary}   bleu (sacrebleu corpus BLEU, 0-100), rouge1, rouge2, rougeL
                (rouge-score F1 with stemming, mean, 0-100): greedy generation against the text.
Each group also reports `examples`. Every process evaluates every example (the metrics are
identical on all of them).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax
import numpy as np
from flax import nnx

from recjax.eval import batching
from recjax.eval import metrics as metrics_lib
from recjax.models import decoding

ANSWER_KINDS = {"{rating}": "rating", "{target}": "item", "{answer}": "yesno",
                "{explanation}": "text", "{summary}": "text"}
MISS = 1 << 30


@dataclasses.dataclass
class Example:
  """One evaluated prompt."""

  prompt: dict[str, np.ndarray]  # infilling.answer_prompt(...) of the encoded prompt
  family: str
  template: str
  held_out: bool
  kind: str                      # a value of ANSWER_KINDS
  target_text: str               # the held-out answer as training would write it
  target_item: int = 0           # item answers: the held-out item
  index: int = -1                # the prompt's index in its family's corpus (for inspection)
  user: int = -1                 # the user (row of the dataset)
  candidates: np.ndarray | None = None  # item answers of a candidate prompt: its items
  negatives: np.ndarray | None = None   # item answers otherwise: sampled unseen items


@dataclasses.dataclass(frozen=True)
class Answers:
  """What answers look like to the model."""

  item_tokens: Sequence[Sequence[int]]  # [i] = item i's text tokens (i = 1..N; [0] unused)
  encode: Callable[[str], list[int]]    # answer text -> tokens (no BOS/EOS)
  decode: Callable[[Sequence[int]], str]
  rating_values: Sequence[str]          # the rating strings training writes ("1", "4.5", ...)
  eop: int
  pad: int = 0


def _width(n: int, multiple: int = 32) -> int:
  return max(multiple, -(-n // multiple) * multiple)


class P5Evaluator:
  """Every P5 family's metrics on seen and unseen prompts; see the module docstring.

  Args:
    examples: split -> the examples to evaluate (built once per split by the task).
    answers: how answers are written (`Answers`).
    dynamic: dynamic Part-B positions (an entity trie over item texts) instead of static.
    num_beams: beams of the full-catalogue constrained search.
    ks: cut-offs of the ranking metrics.
    max_new_tokens: longest generated explanation / summary (and item text in the search).
    batch_size: rows per scoring or decoding batch.
  """

  name = "p5"

  def __init__(self, examples: Callable[[str], Sequence[Example]], answers: Answers, *,
               dynamic: bool = False, num_beams: int = 20, ks: Sequence[int] = (5, 10),
               max_new_tokens: int = 32, batch_size: int = 32, every_steps: int = 0):
    self.examples, self.answers, self.dynamic = examples, answers, bool(dynamic)
    self.num_beams, self.ks = int(num_beams), tuple(int(k) for k in ks)
    self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
    self.every_steps = int(every_steps)
    self._tries = None

  def __call__(self, model: nnx.Module, split: str, mesh: jax.sharding.Mesh) -> dict[str, float]:
    groups: dict[tuple[str, str], list[Example]] = {}
    for ex in self.examples(split):
      groups.setdefault((ex.family, "unseen" if ex.held_out else "seen"), []).append(ex)
    out = {}
    for (family, group), exs in sorted(groups.items()):
      metrics = {"examples": float(len(exs))}
      for kind in dict.fromkeys(e.kind for e in exs):
        metrics.update(getattr(self, f"_{kind}")(model, [e for e in exs if e.kind == kind],
                                                 mesh))
      out.update({f"p5/{family}/{group}/{k}": v for k, v in metrics.items()})
    return out

  # --- Scoring ------------------------------------------------------------------------------

  def log_probs(self, model: nnx.Module, exs: Sequence[Example],
                answers: Sequence[Sequence[Sequence[int]]], entity_answers: bool,
                mesh: jax.sharding.Mesh | None = None) -> list[np.ndarray]:
    """log p(answer + [eop] | prompt) of each example's candidate answers (token lists), as
    Part B of the training layout; `entity_answers`: the answers are catalogue entities (their
    intra-positions are dynamic when the evaluator's are). Inputs are replicated on `mesh`."""
    num = max(len(a) for a in answers)
    rows = self.batch_size * 8  # continuations per scoring call
    # The prompts of a batch are prefilled once; their continuations are then scored in calls
    # of `rows`, shortest first, each padded to its own longest rather than all to the longest
    # (item texts vary in length several-fold: the padding was most of the cost).
    per_call = min(len(exs), max(1, (4 * rows) // num))
    width = _width(max(len(a) for opts in answers for a in opts) + 1, 8)
    entity_trie = self._item_tries()[1] if entity_answers else None  # None unless dynamic
    entity_trie = batching.replicated(entity_trie, mesh)
    out = []
    for batch, n, start in self._prompt_batches(exs, per_call):
      seqs = sorted(((r, j, list(answer) + [self.answers.eop])
                     for r in range(n) for j, answer in enumerate(answers[start + r])),
                    key=lambda x: len(x[2]))
      batch = batching.replicated(batch, mesh)
      prefilled = decoding.prefill(
          model, batch["tokens"], batch["lengths"], width, positions=batch["inter"],
          extra_positions=batch["intra"], prefix_mask=batch["prefix"],
          part_b=decoding.PartB(batch["mask"], batch["sop_intra"], entity_trie))
      scores = [np.zeros(len(answers[start + r]), np.float32) for r in range(n)]
      for first in range(0, len(seqs), rows):
        chunk = seqs[first:first + rows]
        conts = np.full((rows, _width(len(chunk[-1][2]), 8)), self.answers.pad, np.int32)
        lengths, prompt_of = np.zeros(rows, np.int32), np.zeros(rows, np.int32)
        for i, (r, _, seq) in enumerate(chunk):
          conts[i, :len(seq)], lengths[i], prompt_of[i] = seq, len(seq), r
        got = batching.to_host(decoding.score_prefilled(
            model, prefilled, *batching.replicated((conts, lengths, prompt_of), mesh)))
        for i, (r, j, _) in enumerate(chunk):
          scores[r][j] = got[i]
      out += scores
    return out

  def _choose(self, model, exs: Sequence[Example], choices: Sequence[str], mesh) -> list[int]:
    """Index of the likeliest of `choices` (plain text answers) for each example."""
    tokens = [self.answers.encode(text) for text in choices]
    return [int(np.argmax(s))
            for s in self.log_probs(model, exs, [tokens] * len(exs), False, mesh)]

  def _rating(self, model, exs, mesh):
    values = list(self.answers.rating_values)
    if not values:
      raise ValueError("rating prompts to evaluate but no rating values in the data")
    picked = self._choose(model, exs, values, mesh)
    pred = np.array([float(values[j]) for j in picked])
    true = np.array([float(e.target_text) for e in exs])
    return {"rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
            "mae": float(np.mean(np.abs(pred - true)))}

  def _yesno(self, model, exs, mesh):
    picked = self._choose(model, exs, ("yes", "no"), mesh)
    return {"accuracy": float(np.mean([("yes", "no")[j] == e.target_text
                                       for j, e in zip(picked, exs)]))}

  def _item(self, model, exs, mesh):
    out = {}
    # Sampled candidates: the prompt's own (direct) or the target + sampled negatives.
    cands = [ex.candidates if ex.candidates is not None else
             np.concatenate([[ex.target_item], ex.negatives]) for ex in exs]
    answers = [[self.answers.item_tokens[int(i)] for i in c] for c in cands]
    scores = self.log_probs(model, exs, answers, True, mesh)
    ranks = {}
    for ex, c, s in zip(exs, cands, scores):
      t = s[int(np.flatnonzero(c == ex.target_item)[0])]
      ranks.setdefault(len(c) - 1, []).append(int(np.sum(s > t) + np.sum(s == t) - 1))
    for size, r in sorted(ranks.items()):
      out.update(_named(metrics_lib.ranking_metrics(np.array(r), self.ks), f"sampled{size}_"))
    out.update(_named(metrics_lib.ranking_metrics(self._catalogue_ranks(model, exs, mesh),
                                                  self.ks)))
    return out

  def _catalogue_ranks(self, model, exs: Sequence[Example], mesh) -> np.ndarray:
    """Full-catalogue ranks from the trie-constrained beam search."""
    trie, entity_trie, by_tokens = self._item_tries()
    trie, entity_trie = batching.replicated((trie, entity_trie), mesh)
    # As long as the longest item text + [eop], whatever max_new_tokens says: an item the search
    # cannot finish could never be ranked. The trie ends every beam at [eop].
    longest = max(len(t) for t in self.answers.item_tokens[1:]) + 1
    cfg = decoding.DecodeConfig(max_new_tokens=longest, method="beam",
                                num_beams=self.num_beams, stop_tokens=(self.answers.eop,),
                                pad_id=self.answers.pad)
    ranks = []
    for batch, n, _ in self._prompt_batches(exs, self.batch_size):
      batch = batching.replicated(batch, mesh)
      out = decoding.generate(model, batch["tokens"], batch["lengths"], cfg, trie=trie,
                              positions=batch["inter"], extra_positions=batch["intra"],
                              prefix_mask=batch["prefix"],
                              part_b=decoding.PartB(batch["mask"], batch["sop_intra"],
                                                    entity_trie))
      tokens, scores = batching.to_host((out.tokens, out.scores))
      for r in range(n):
        placed = []
        for beam in range(self.num_beams):
          if np.isfinite(scores[r, beam]):
            seq = tokens[r, beam]
            stop = np.flatnonzero(seq == self.answers.eop)
            placed += by_tokens.get(tuple(int(t) for t in seq[:stop[0] if len(stop) else None]),
                                    [])
        target = exs[len(ranks)].target_item
        ranks.append(placed.index(target) if target in placed else MISS)
    return np.array(ranks, np.int64)

  def _item_tries(self):
    if self._tries is None:
      items = [list(map(int, t)) for t in self.answers.item_tokens[1:]]
      by_tokens: dict[tuple[int, ...], list[int]] = {}
      for item, seq in enumerate(items, start=1):
        by_tokens.setdefault(tuple(seq), []).append(item)
      trie = decoding.Trie.from_sequences([s + [self.answers.eop] for s in items])
      entity_trie = (decoding.Trie.from_sequences([s for s in items if s]) if self.dynamic
                     else None)
      self._tries = trie, entity_trie, by_tokens
    return self._tries

  def _prompt_batches(self, exs: Sequence[Example], rows: int):
    """(left-padded prompt batch of `rows` rows, real rows, first example) over `exs` (the
    last batch is padded with its first example: one shape, one compile)."""
    width = _width(max(len(e.prompt["tokens"]) for e in exs), 16)
    for start in range(0, len(exs), rows):
      chunk = list(exs[start:start + rows])
      n = len(chunk)
      chunk += [chunk[0]] * (rows - n)
      tokens, lengths = decoding.left_pad([e.prompt["tokens"] for e in chunk], self.answers.pad,
                                          width)
      batch = {"tokens": tokens, "lengths": lengths}
      for key, name in (("inter_positions", "inter"), ("intra_positions", "intra"),
                        ("prefix_mask", "prefix")):
        batch[name] = decoding.left_pad([e.prompt[key] for e in chunk], 0, width)[0]
      batch["mask"] = np.array([int(e.prompt["mask_position"]) for e in chunk], np.int32)
      batch["sop_intra"] = np.array([int(e.prompt["intra_positions"][-1]) for e in chunk],
                                    np.int32)
      yield batch, n, start

  def _text(self, model, exs, mesh):
    from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
    import sacrebleu  # pylint: disable=g-import-not-at-top
    cfg = decoding.DecodeConfig(max_new_tokens=self.max_new_tokens, method="greedy",
                                stop_tokens=(self.answers.eop,), pad_id=self.answers.pad)
    hyps = []
    for batch, n, _ in self._prompt_batches(exs, self.batch_size):
      batch = batching.replicated(batch, mesh)
      out = decoding.generate(model, batch["tokens"], batch["lengths"], cfg,
                              positions=batch["inter"], extra_positions=batch["intra"],
                              prefix_mask=batch["prefix"],
                              part_b=decoding.PartB(batch["mask"], batch["sop_intra"]))
      tokens = batching.to_host(out.tokens)
      for r in range(n):
        seq = tokens[r]
        stop = np.flatnonzero(seq == self.answers.eop)
        hyps.append(self.answers.decode(seq[:stop[0] if len(stop) else None]).strip())
    refs = [e.target_text.strip() for e in exs]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rouge = [scorer.score(r, h) for r, h in zip(refs, hyps)]
    out = {"bleu": float(sacrebleu.corpus_bleu(hyps, [refs]).score)}
    for key in ("rouge1", "rouge2", "rougeL"):
      out[key] = 100.0 * float(np.mean([s[key].fmeasure for s in rouge]))
    return out


def _named(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
  """hr@K and ndcg@K of `ranking_metrics` (P5 reports these), renamed with `prefix`."""
  return {prefix + k: v for k, v in metrics.items() if k.split("@")[0] in ("hr", "ndcg")}


def answer_kind(target_format: str) -> str:
  """The ANSWER_KINDS value of a template's target format ("{rating}" -> "rating")."""
  if target_format not in ANSWER_KINDS:
    raise ValueError(f"no P5 metric for answers written as {target_format!r}; known: "
                     f"{sorted(ANSWER_KINDS)}")
  return ANSWER_KINDS[target_format]
