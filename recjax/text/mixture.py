"""Multi-domain mixtures: several corpora combined with per-domain rates and domain tags.

CALRec stage 1 trains on a mixture of Amazon categories, stage 2 on the target category. Each
domain keeps its own data, split and item catalogue, so evaluation stays per domain
(`Mixture.domains[i].eval_corpus("test")` ranks against that domain's catalogue only).

An epoch of a mixture is `length` documents (default: the sum of the domain corpora's lengths);
domain d contributes round(length * rate_d) of them, drawn without replacement from its corpus
and cycling through it (with a fresh permutation per cycle) when the rate asks for more documents
than the corpus has. The draw is fixed by the seed; the pipeline shuffles the order every epoch.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from recjax.data.canonical import InteractionData
from recjax.data.splits import Split
from recjax.text import templates as templates_lib
from recjax.text.document import Document
from recjax.text.user_corpus import UserCorpus
from recjax.text.item_text import ItemCatalogue, ItemTextConfig


@dataclasses.dataclass
class Domain:
  """One component of a mixture: its training corpus, rate and tag, and what evaluation needs."""

  name: str  # tag rendered as {domain} and reported in meta["domain"]
  corpus: Sequence[Document]  # training documents (UserCorpus, ItemCorpus, ...)
  rate: float = 1.0
  data: InteractionData | None = None
  split: Split | None = None
  catalogue: ItemCatalogue | None = None
  corpus_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def eval_corpus(self, part: str = "test", templates: str | None = None,
                  **kwargs) -> UserCorpus:
    """Evaluation prompts of this domain (own catalogue, own users)."""
    if self.data is None or self.split is None:
      raise ValueError(f"domain {self.name!r} was built without data/split")
    args = dict(self.corpus_kwargs)
    args.update(kwargs)
    if templates is not None:
      args["templates"] = templates
    return UserCorpus(self.data, self.split, part=part, catalogue=self.catalogue,
                      domain=self.name, **args)


class Mixture:
  """A random-access corpus drawing from several domains at fixed rates."""

  def __init__(self, domains: Sequence[Domain], length: int | None = None, seed: int = 0):
    if not domains:
      raise ValueError("a mixture needs at least one domain")
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
      raise ValueError(f"domain names must be unique, got {names}")
    rates = np.array([d.rate for d in domains], np.float64)
    if np.any(rates < 0) or rates.sum() <= 0:
      raise ValueError(f"rates must be >= 0 with a positive sum, got {rates.tolist()}")
    for d in domains:
      if d.rate > 0 and len(d.corpus) == 0:
        raise ValueError(f"domain {d.name!r} has rate {d.rate} but an empty corpus")
    self.domains = list(domains)
    self.rates = rates / rates.sum()
    self.seed = seed
    length = int(length if length is not None else sum(len(d.corpus) for d in domains))
    # Largest-remainder apportionment of `length` slots to domains.
    exact = self.rates * length
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:length - counts.sum()]] += 1
    self.counts = counts
    rng = np.random.default_rng([seed, 0x6D6978])
    self._domain = rng.permutation(np.repeat(np.arange(len(domains)), counts)).astype(np.int32)
    self._index = np.zeros(length, np.int64)
    for d, domain in enumerate(domains):
      slots = np.flatnonzero(self._domain == d)
      if not len(slots):
        continue
      n = len(domain.corpus)
      cycles = -(-len(slots) // n)
      draws = np.concatenate([np.random.default_rng([seed, d, c]).permutation(n)
                              for c in range(cycles)])
      self._index[slots] = draws[:len(slots)]

  def __len__(self) -> int:
    return len(self._domain)

  def __getitem__(self, index: int) -> Document:
    d = int(self._domain[index])
    doc = self.domains[d].corpus[int(self._index[index])]
    doc.meta = dict(doc.meta, domain=self.domains[d].name, domain_id=d)
    return doc

  def domain_of(self, index: int) -> int:
    return int(self._domain[index])

  def describe(self) -> str:
    lines = [f"mixture of {len(self.domains)} domains, {len(self):,} documents per epoch"]
    for d, (domain, count) in enumerate(zip(self.domains, self.counts)):
      lines.append(f"  [{d}] {domain.name}: rate {self.rates[d]:.3f}, {count:,} documents "
                   f"from a corpus of {len(domain.corpus):,}")
    return "\n".join(lines)


def build_mixture(specs: Sequence[Mapping[str, Any]], root: str, *,
                  templates: str = "calrec", split: str = "leave_one_out",
                  split_kwargs: Mapping[str, Any] | None = None,
                  item_config: ItemTextConfig | None = None, tokenizer=None,
                  length: int | None = None, seed: int = 0, **corpus_kwargs) -> Mixture:
  """Loads each dataset, splits it and builds its training UserCorpus, then mixes them.

  `specs`: one mapping per domain with "dataset" (a `load_dataset` spec, e.g.
  {"name": "amazon_office"}), optional "rate" (default 1.0) and "tag" (default: a readable name,
  see templates.DOMAIN_NAMES). `split_kwargs` go to `splits.make_split` (a temporal split's
  `valid_fraction` / `test_fraction`). Other keyword arguments go to every `UserCorpus`.
  """
  # pylint: disable=g-import-not-at-top
  from recjax.data import registry
  from recjax.data import splits as splits_lib
  # pylint: enable=g-import-not-at-top
  domains = []
  for spec in specs:
    dataset = dict(spec["dataset"])
    data = registry.load_dataset(dataset, root)
    data_split = splits_lib.make_split(data, split, **dict(split_kwargs or {}))
    tag = spec.get("tag") or templates_lib.DOMAIN_NAMES.get(dataset["name"], dataset["name"])
    catalogue = ItemCatalogue.build(data, item_config or ItemTextConfig(), tokenizer)
    kwargs = dict(corpus_kwargs, templates=templates, tokenizer=tokenizer, seed=seed)
    corpus = UserCorpus(data, data_split, part="train", catalogue=catalogue, domain=tag,
                        **kwargs)
    domains.append(Domain(tag, corpus, float(spec.get("rate", 1.0)), data, data_split,
                          catalogue, kwargs))
  return Mixture(domains, length=length, seed=seed)
