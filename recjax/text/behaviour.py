"""RecSysLLM's behaviour sampling: each user document shows a long-, medium- or short-term window.

RecSysLLM (arXiv 2308.10837, ../shared/papers/SPECS.md §2) writes behaviour sequences as text
and samples them "10% long-term, 30% medium-term, 60% short-term". The paper gives no window
sizes; recjax reads the three as windows of the most recent items of the history a document
shows:
  long    the corpus's own window: up to `max_history_items`, as many as fit the token budget;
  medium  at most `medium_items` of the most recent ones;
  short   at most `short_items` of the most recent ones.
The kind is drawn per document (seeded by the seed and the document's index, so a corpus is the
same on every read and process) with probabilities `long_rate : medium_rate : short_rate`.
A document whose template shows no history (item text) is the same whatever the kind.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from recjax.text.document import Document

KINDS = ("long", "medium", "short")


@dataclasses.dataclass(frozen=True)
class BehaviourConfig:
  """Knobs of behaviour sampling (`config.glm_corpus`; see `recjax.tasks.glm.default_config`)."""

  long_rate: float = 0.1
  medium_rate: float = 0.3
  short_rate: float = 0.6
  medium_items: int = 20
  short_items: int = 5

  def __post_init__(self):
    rates = (self.long_rate, self.medium_rate, self.short_rate)
    for key, rate in zip(("long_rate", "medium_rate", "short_rate"), rates):
      if not rate >= 0:
        raise ValueError(f"config.glm_corpus.{key}={rate!r}: must be >= 0")
    if sum(rates) <= 0:
      raise ValueError("config.glm_corpus: long_rate + medium_rate + short_rate must be > 0")
    if not 1 <= int(self.short_items) <= int(self.medium_items):
      raise ValueError(f"config.glm_corpus.short_items={self.short_items} and medium_items="
                       f"{self.medium_items}: need 1 <= short_items <= medium_items")

  @property
  def probs(self) -> np.ndarray:
    p = np.array([self.long_rate, self.medium_rate, self.short_rate], np.float64)
    return p / p.sum()

  @classmethod
  def from_config(cls, block: Mapping[str, Any]) -> "BehaviourConfig":
    """From a config block; keys other than the fields (and `behaviour`) are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dict(block).items() if k in names})


class BehaviourSampled:
  """The documents of a `user_corpus.UserCorpus`, each with a sampled behaviour window.

  Everything else (`data`, `split`, `catalogue`, `domain`, ...) is the wrapped corpus's.
  """

  def __init__(self, corpus, config: BehaviourConfig = BehaviourConfig(), seed: int = 0):
    if not hasattr(corpus, "render_example"):
      raise ValueError("behaviour sampling needs a single-dataset user corpus (one that "
                       f"renders history windows), got {type(corpus).__name__}; set "
                       "config.glm_corpus.behaviour=False for a mixture or a text file")
    self.corpus, self.config, self.seed = corpus, config, int(seed)
    self._windows = {"medium": int(config.medium_items), "short": int(config.short_items)}

  def __getattr__(self, name: str):
    if name == "corpus":  # not set yet (unpickling): no recursion
      raise AttributeError(name)
    return getattr(self.corpus, name)

  def __len__(self) -> int:
    return len(self.corpus)

  def kind(self, index: int) -> str:
    """The behaviour window of document `index`."""
    rng = np.random.default_rng([self.seed, 0x6265, int(index)])
    return KINDS[int(rng.choice(len(KINDS), p=self.config.probs))]

  def __getitem__(self, index: int) -> Document:
    kind = self.kind(index)
    doc = self.corpus[index]  # the long window: every item that fits the budget
    limit = self._windows.get(kind)
    if limit is not None and doc.meta.get("history_items", 0) > limit:
      doc = self.corpus.render_example(index, num_history_items=limit)
    doc.meta = {**doc.meta, "behaviour": kind}
    return doc

  def describe(self) -> str:
    inner = self.corpus.describe() if hasattr(self.corpus, "describe") else \
        self.corpus.data.summary()
    c = self.config
    return (f"{inner}\nbehaviour sampling: long {c.probs[0]:.0%} (up to "
            f"{self.corpus.max_history_items} items), medium {c.probs[1]:.0%} (<= "
            f"{c.medium_items}), short {c.probs[2]:.0%} (<= {c.short_items})")
