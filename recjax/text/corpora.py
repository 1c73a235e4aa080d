"""Small corpora of Documents built around others: text files, answers appended, subsets.

`EvalCorpus` names one evaluation corpus of the lm task (`recjax.eval.perplexity` reads it).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from recjax.text.document import Document


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

  def __getitem__(self, index: int) -> Document:
    return Document(self.lines[index], (), 0, meta={"index": int(index)})


class WithAnswer:
  """Evaluation prompts of a `UserCorpus` with the held-out answer appended as the target."""

  def __init__(self, corpus):
    self.corpus = corpus

  def __len__(self) -> int:
    return len(self.corpus)

  def __getitem__(self, index: int) -> Document:
    doc = self.corpus[index]
    return Document(doc.text + doc.meta["target_text"], doc.spans, len(doc.text), meta=doc.meta)


class Subset:
  """The documents of `corpus` at `indices`."""

  def __init__(self, corpus, indices: np.ndarray):
    self.corpus, self.indices = corpus, indices

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> Document:
    return self.corpus[int(self.indices[index])]


@dataclasses.dataclass
class EvalCorpus:
  """A named evaluation corpus of Documents."""

  name: str
  documents: Any
  has_answer: bool = False  # documents end in a template answer (target_* metrics)
