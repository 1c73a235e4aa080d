"""The synthetic-data curriculum as LM corpora (SPECS.md §3): one corpus per modality, mixed.

Every corpus is random-access (len + getitem -> `recjax.text.document.Document`), deterministic
for its seed, and marks every item mention as an item entity span, so the pipeline's entity
features (GLM entity masking, RecSysLLM positions) work on it. Items are written as the
catalogue writes them, so `config.text.item_format` (text / semantic_id / both) applies.

Training modalities (`config.curriculum.rates`; a rate of 0 leaves one out, all 0 = off):
- `item_text`: one alignment sentence per item, "This item <ID> is described as <title>, by
  <brand>, in <category>." (`AlignmentCorpus`), the held-out items left out.
- `rules`: one sentence per co-occurrence association rule mined from `split.train`, with its
  statistics (`RuleCorpus`).
- `walks`: node2vec walks on the training co-occurrence graph, each rendered as a user history
  by a template (`HistoryCorpus`; "profile" by default). Shard s of n makes only the walks of
  start items start_items[s::n] (`walks.node2vec_walks`).
- `histories`: real training histories, the lm task's own `UserCorpus` (config.text).
- `general`: a plain text file, one document per line (`TextFileCorpus`), or the review texts
  of other registry datasets (`ReviewTextCorpus`: natural language, no item of the catalogue).

`build_curriculum` mixes them at their rates (`recjax.text.mixture.Mixture`, one domain per
modality). `heldout_corpora` gives the held-out perplexity corpora per modality, named
`curriculum/<name>` (`HELDOUT_NAMES`). docs/curriculum.md lists every knob.
"""
from __future__ import annotations

import string
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np
from absl import logging

from recjax.curriculum import cooccurrence
from recjax.curriculum import walks as walks_lib
from recjax.data.canonical import InteractionData, Sequences
from recjax.data.splits import Split
from recjax.text import templates as templates_lib
from recjax.text.corpora import EvalCorpus, Subset, TextFileCorpus
from recjax.text.document import Document, Entity, Span, render_list, render_template
from recjax.text.item_text import ItemCatalogue
from recjax.text.mixture import Domain, Mixture
from recjax.text.user_corpus import UserCorpus

MODALITIES = ("item_text", "rules", "walks", "histories", "general")
# Held-out corpora, in the order `heldout_corpora` returns them (each named curriculum/<name>).
HELDOUT_NAMES = ("item_text", "pairs_both_seen", "pairs_one_unseen", "pairs_both_unseen",
                 "histories_heldout_users", "histories_full_graph")
# A held-out co-occurrence pair: the answer (perplexity's target) starts at {b}.
PAIR_TEMPLATE = "Users who interact with {a} then interact with {b}."
ID_FORMATS = ("auto", "catalogue", "semantic_id", "raw_id")
ISOLATED = ("skip", "error")
_ALIGN_PREFIX = "This item "  # cooccurrence.alignment_sentence starts with it


def default_config() -> ml_collections.ConfigDict:
  """The `config.curriculum` block of the lm task, every knob at its recommended value."""
  return ml_collections.ConfigDict(dict(
      # Training mixture: rate of each modality (normalised to sum 1). All 0 (default): the lm
      # task trains on config.text as before. Recommended, the paper's usefulness order
      # histories > rules > item text > general: item_text=1, rules=1, walks=2, histories=2.
      rates=dict(item_text=0.0, rules=0.0, walks=0.0, histories=0.0, general=0.0),
      length=0,              # documents per epoch of the mixture; 0 = the sum of the corpora.
      general_file="",       # plain text for the `general` modality, one document per line.
      general_reviews="",    # or: registry datasets whose review texts are the `general`
                             # modality, comma-separated (e.g. "amazon2018_gift_cards,
                             # amazon2018_all_beauty"); never the curriculum's own dataset.
      item_text=dict(
          id="auto",         # <ID> of "This item <ID> is ...": auto = the semantic ID when
                             # text.semantic_ids is set, else the item as the catalogue writes
                             # it; or catalogue | semantic_id | raw_id ("item <raw id>").
          heldout_fraction=0.05,  # items whose sentence is held out of training for the
                             # item_text perplexity corpus (seeded); 0 = train on every item and
                             # evaluate on all of them (then it measures fit, not held-out).
      ),
      rules=dict(
          window=3,          # b counts when at most this many positions after a. 3.
          ordered=True,      # only b after a (True) or either side.
          min_count=2,       # training sequences a pair must occur in. 2.
          min_support=0.0,   # minimum support count(a, b) / sequences.
          min_confidence=0.0,  # minimum confidence count(a, b) / count(a).
          min_lift=1.0,      # minimum lift (1: together at least as often as chance).
          max_rules=0,       # keep the best this many (confidence, then lift); 0 = all.
          template=cooccurrence.RULE_TEMPLATE,  # {a} {b} {count} {support} {confidence} {lift}.
      ),
      walks=dict(
          templates="profile",  # templates a walk is rendered by (recjax.text.templates; fields
                             # user, history, target, item, domain only). With a target the
                             # walk's last item is the answer.
          user="A user",     # what {user} is in a walk (a walk has no real user).
          graph_window=1,    # a -- b when at most this many positions apart in training. 1.
          p=1.0,             # node2vec return parameter (small: revisit). [open] 1.0.
          q=1.0,             # node2vec in-out parameter (> 1 local, < 1 outward). [open] 1.0.
          walk_length=20,    # items per walk, start included. 20.
          walks_per_node=10,  # walks from each non-isolated item. 10 (node2vec).
          weighted=True,     # steps in proportion to co-occurrence counts.
          seed=0,            # walk seed; with (start item, repeat) it fixes a walk.
          isolated="skip",   # items without a neighbour: skip (start no walk; counted in the
                             # summary) or error (raise, naming how many and which).
      ),
      eval=dict(
          pairs_window=1,    # held-out pairs: the last this many history items x the target.
          pair_template=PAIR_TEMPLATE,  # {a} {b}; the answer starts at {b}.
          history_templates="",  # templates of the held-out history corpora; "" = walks.templates.
          full_graph_walks_per_node=1,  # walks per item on the graph of all interactions.
      ),
  ))


def enabled(config) -> bool:
  """Whether `config` trains on the curriculum (some `curriculum.rates` entry > 0)."""
  cur = config.get("curriculum")
  return cur is not None and any(float(cur.rates[m]) > 0 for m in MODALITIES)


# --- Rendering ---------------------------------------------------------------------------------


def render_fields(fmt: str, fields: Mapping[str, Any], offset: int = 0
                  ) -> tuple[str, list[Span]]:
  """`str.format` of `fmt` (format specs allowed) whose Entity fields become spans."""
  out, spans, pos = [], [], offset
  for literal, name, spec, _ in string.Formatter().parse(fmt):
    out.append(literal)
    pos += len(literal)
    if name is None:
      continue
    if name not in fields:
      raise ValueError(f"template field {{{name}}} is unknown in {fmt!r}; use "
                       f"{sorted(fields)}")
    value = fields[name]
    if isinstance(value, Entity):
      text = value.text
      spans.append(Span(pos, pos + len(text), value.kind, value.role, value.item, value.name))
    else:
      text = format(value, spec or "")
    out.append(text)
    pos += len(text)
  return "".join(out), spans


def _item(catalogue: ItemCatalogue, item: int, role: str) -> Entity:
  return Entity(catalogue.texts[int(item)], "item", role, int(item))


def id_texts(catalogue: ItemCatalogue, data: InteractionData, id_format: str = "auto",
             semantic_ids: str = "") -> list[str]:
  """The <ID> of every item's alignment sentence (index 0: ""), by `id_format` (ID_FORMATS)."""
  if id_format not in ID_FORMATS:
    raise ValueError(f"curriculum.item_text.id={id_format!r}: choose from {ID_FORMATS}")
  if id_format == "auto":
    id_format = "semantic_id" if semantic_ids else "catalogue"
  if id_format == "catalogue":
    return list(catalogue.texts)
  if id_format == "raw_id":
    return [""] + [f"item {data.item_ids[i]}" for i in range(1, data.num_items + 1)]
  if not semantic_ids:
    raise ValueError("curriculum.item_text.id='semantic_id' needs config.text.semantic_ids")
  from recjax.text import semantic_text  # pylint: disable=g-import-not-at-top
  ids = semantic_text.load_semantic_ids(semantic_ids)
  if len(ids.codes) != data.num_items + 1:
    raise ValueError(f"the semantic IDs cover {len(ids.codes) - 1} items but {data.name} has "
                     f"{data.num_items}")
  return semantic_text.code_texts(ids.codes, shared_digits=ids.shared_digits)


def heldout_items(num_items: int, fraction: float, seed: int = 0) -> np.ndarray:
  """The sorted items (1..num_items) whose alignment sentence is held out: a seeded draw of
  round(fraction * num_items)."""
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"curriculum.item_text.heldout_fraction must lie in [0, 1), got {fraction}")
  count = int(round(fraction * num_items))
  rng = np.random.default_rng([seed, 0x616C6967])
  return np.sort(rng.choice(np.arange(1, num_items + 1), count, replace=False)).astype(np.int64)


# --- Layer 1: grounding ------------------------------------------------------------------------


class AlignmentCorpus:
  """One "This item <ID> is described as <title>, by <brand>, in <category>." per item.

  The <ID> is an item entity (role "target"). Items without title, brand and category get no
  sentence (`cooccurrence.alignment_sentences`).
  """

  def __init__(self, data: InteractionData, catalogue: ItemCatalogue, ids: Sequence[str],
               items: Sequence[int] | None = None):
    self.catalogue = catalogue
    self._ids = ids
    self._sentences = cooccurrence.alignment_sentences(data, lambda i: ids[i], items,
                                                       catalogue.config)

  def __len__(self) -> int:
    return len(self._sentences)

  def __getitem__(self, index: int) -> Document:
    item, text = self._sentences[index]
    start = len(_ALIGN_PREFIX)
    span = Span(start, start + len(self._ids[item]), "item", "target", item)
    return Document(text, (span,), 0, meta={"item": item, "index": int(index)})


class RuleCorpus:
  """One sentence per association rule a -> b (a: role "history", b: role "target")."""

  def __init__(self, rules: cooccurrence.Rules, catalogue: ItemCatalogue,
               template: str = cooccurrence.RULE_TEMPLATE):
    self.rules, self.catalogue, self.template = rules, catalogue, template
    if len(rules):
      self[0]  # a bad template fails here, not in a pipeline worker

  def __len__(self) -> int:
    return len(self.rules)

  def __getitem__(self, index: int) -> Document:
    r = self.rules
    a, b = int(r.antecedent[index]), int(r.consequent[index])
    fields = dict(a=_item(self.catalogue, a, "history"), b=_item(self.catalogue, b, "target"),
                  count=int(r.count[index]), support=float(r.support[index]),
                  confidence=float(r.confidence[index]), lift=float(r.lift[index]))
    text, spans = render_fields(self.template, fields)
    return Document(text, tuple(spans), 0, meta={"a": a, "b": b, "index": int(index)})


class PairCorpus:
  """Held-out co-occurrence pairs (a, b) as rule-style sentences; the answer starts at {b}."""

  def __init__(self, a: np.ndarray, b: np.ndarray, catalogue: ItemCatalogue,
               template: str = PAIR_TEMPLATE):
    if "{b}" not in template or "{a}" not in template:
      raise ValueError(f"curriculum.eval.pair_template must contain {{a}} and {{b}}: "
                       f"{template!r}")
    self.a, self.b, self.catalogue = np.asarray(a), np.asarray(b), catalogue
    self.prompt, rest = template.split("{b}", 1)
    self.target = "{b}" + rest

  def __len__(self) -> int:
    return len(self.a)

  def __getitem__(self, index: int) -> Document:
    a, b = int(self.a[index]), int(self.b[index])
    fields = dict(a=_item(self.catalogue, a, "history"), b=_item(self.catalogue, b, "target"))
    prompt, spans = render_fields(self.prompt, fields)
    target, target_spans = render_fields(self.target, fields, offset=len(prompt))
    return Document(prompt + target, tuple(spans + target_spans), len(prompt),
                    meta={"a": a, "b": b, "index": int(index), "target_item": b,
                          "target_text": target})


# --- Layer 2: histories ------------------------------------------------------------------------

_HISTORY_FIELDS = {"user", "history", "target", "item", "domain"}


class HistoryCorpus:
  """Item sequences (walks, or held-out histories followed by their target) as user histories.

  Row i is rendered by a template drawn per row from `templates` (seeded). A template with a
  target writes the row's last item as the answer (role "target") after the other items; one
  without writes every item in the history. The `max_history_items` most recent history items
  are kept; with a tokenizer and `max_tokens`, the most recent that fit the budget (at least
  one). `{user}` is the plain text `user` (no entity: a walk has no user).
  """

  def __init__(self, sequences: Sequences, catalogue: ItemCatalogue,
               templates: str | Sequence[str] = "profile", user: str = "A user",
               domain: str = "", seed: int = 0, max_history_items: int = 0, tokenizer=None,
               max_tokens: int | None = None, meta: Mapping[str, np.ndarray] | None = None):
    self.sequences, self.catalogue = sequences, catalogue
    self.templates = templates_lib.select(templates)
    bad = {t.name: sorted(t.fields - _HISTORY_FIELDS) for t in self.templates
           if t.fields - _HISTORY_FIELDS}
    if bad:
      raise ValueError(f"history templates may use only {sorted(_HISTORY_FIELDS)}; {bad}")
    self.user, self.domain, self.seed = user, domain, seed
    self.max_history_items = max_history_items
    self.tokenizer, self.max_tokens = tokenizer, max_tokens
    self.meta = dict(meta or {})
    self.walks: walks_lib.Walks | None = None  # set by `walk_corpus`: the walks rendered
    if tokenizer is not None and max_tokens:
      self._item_tokens = (catalogue.token_lengths() if catalogue.tokens is not None else
                           np.array([len(tokenizer.encode(t).ids) for t in catalogue.texts]))

  @property
  def has_answer(self) -> bool:
    return all(t.has_target for t in self.templates)

  def __len__(self) -> int:
    return len(self.sequences)

  def __getitem__(self, index: int) -> Document:
    if not 0 <= index < len(self):
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, int(index)])
    template = self.templates[int(rng.integers(len(self.templates)))
                              if len(self.templates) > 1 else 0]
    seq = np.asarray(self.sequences[index])
    fields: dict[str, Any] = {"user": self.user, "domain": self.domain}
    if template.has_target:
      history, target = seq[:-1], int(seq[-1])
      fields["target"] = fields["item"] = _item(self.catalogue, target, "target")
    else:
      history, target = seq, 0
    if self.max_history_items:
      history = history[-self.max_history_items:]

    def render(items):
      fields["history"] = render_list([_item(self.catalogue, i, "history") for i in items],
                                      template.list_item, template.list_sep)
      return render_template(template, fields)

    doc = self._fit(render, history)
    doc.meta = {"index": int(index), "template": template.name, "target_item": target,
                "target_text": doc.text[doc.target_start:] if target else "",
                **{k: int(v[index]) for k, v in self.meta.items()}}
    return doc

  def _fit(self, render, history: np.ndarray) -> Document:
    doc = render(history)
    if self.tokenizer is None or not self.max_tokens or len(history) <= 1:
      return doc
    enc = self.tokenizer.encode(doc.text, add_bos=True, add_eos=True)
    extra = len(enc.ids) - self.max_tokens
    if extra <= 0:
      doc.encoding, doc.encoding_flags = enc, (True, True)
      return doc
    # Drop the oldest items that cover the excess (estimated), then one more at a time.
    costs = np.cumsum(self._item_tokens[history] + 1)
    drop = min(int(np.searchsorted(costs, extra)) + 1, len(history) - 1)
    while True:
      doc = render(history[drop:])
      enc = self.tokenizer.encode(doc.text, add_bos=True, add_eos=True)
      if len(enc.ids) <= self.max_tokens or drop >= len(history) - 1:
        doc.encoding, doc.encoding_flags = enc, (True, True)
        return doc
      drop += 1


def walk_corpus(graph: walks_lib.Graph, catalogue: ItemCatalogue, knobs, *, shard: int = 0,
                num_shards: int = 1, seed: int | None = None, walks_per_node: int | None = None,
                domain: str = "", tokenizer=None, max_tokens: int | None = None,
                max_history_items: int = 0, templates: str | None = None) -> HistoryCorpus:
  """node2vec walks of shard `shard` of `num_shards` on `graph`, as a `HistoryCorpus`.

  `knobs` is a `curriculum.walks` block; `seed`, `walks_per_node` and `templates` override it.
  Isolated items follow `knobs.isolated`: "skip" (they start no walk) or "error".
  """
  isolated = np.flatnonzero(graph.degree[1:] == 0) + 1
  if str(knobs.isolated) not in ISOLATED:
    raise ValueError(f"curriculum.walks.isolated={knobs.isolated!r}: choose from {ISOLATED}")
  if len(isolated) and knobs.isolated == "error":
    raise ValueError(f"{len(isolated):,} of {graph.num_items:,} items have no neighbour in the "
                     f"co-occurrence graph (e.g. items {isolated[:5].tolist()}): they can start "
                     "no walk; set curriculum.walks.isolated='skip' to leave them out")
  if len(isolated) == graph.num_items:
    raise ValueError("the co-occurrence graph has no edge (every item isolated): no walk can "
                     "be made; the training sequences have no two distinct items within "
                     "curriculum.walks.graph_window")
  walks = walks_lib.node2vec_walks(
      graph, walk_length=int(knobs.walk_length),
      walks_per_node=int(walks_per_node or knobs.walks_per_node), p=float(knobs.p),
      q=float(knobs.q), seed=int(knobs.seed if seed is None else seed), shard=shard,
      num_shards=num_shards, weighted=bool(knobs.weighted))
  corpus = HistoryCorpus(walks.as_sequences(), catalogue, templates or knobs.templates,
                         user=str(knobs.user), domain=domain,
                         seed=int(knobs.seed if seed is None else seed),
                         max_history_items=max_history_items, tokenizer=tokenizer,
                         max_tokens=max_tokens,
                         meta={"start": walks.start, "repeat": walks.repeat})
  corpus.walks = walks
  return corpus


# --- The mixture -------------------------------------------------------------------------------


def _base_parts(base) -> tuple[InteractionData, Split, ItemCatalogue, str]:
  if not isinstance(base, UserCorpus):
    raise ValueError("the curriculum needs one dataset (config.data), not config.text.mixture")
  return base.data, base.split, base.catalogue, base.domain


def _shard(corpus, shard: int, num_shards: int):
  if num_shards == 1:
    return corpus
  return Subset(corpus, np.arange(shard, len(corpus), num_shards))


def _budget(config, tokenizer) -> int | None:
  return int(config.text.seq_len) if tokenizer is not None else None


def _mined_rules(split: Split, knobs) -> cooccurrence.Rules:
  return cooccurrence.mine_rules(
      split.train, split.num_items, window=int(knobs.window), ordered=bool(knobs.ordered),
      min_count=int(knobs.min_count), min_support=float(knobs.min_support),
      min_confidence=float(knobs.min_confidence), min_lift=float(knobs.min_lift),
      max_rules=int(knobs.max_rules) or None)


class ReviewTextCorpus(TextFileCorpus):
  """Plain documents, as TextFileCorpus's lines: the distinct review texts ("<summary>.
  <review>") of registry datasets.

  The `general` modality's stand-in for web text where none ships (no download here): natural
  language about other products, no item entity. Reads `InteractionData.reviews` (Amazon 2018
  review files: amazon2018_gift_cards, amazon2018_all_beauty); reviews with neither text are
  dropped, and repeated texts (All_Beauty repeats rows) kept once, in file order.
  """

  # pylint: disable-next=super-init-not-called
  def __init__(self, datasets: Sequence[str], root: str | None = None):
    from recjax.data import registry  # the data layer; only this corpus reads whole datasets

    self.datasets, seen, self.lines = tuple(datasets), set(), []
    for name in self.datasets:
      data = registry.load_dataset(name, root, allow_download=False)
      if "review" not in data.reviews:
        raise ValueError(f"curriculum.general_reviews: dataset {name!r} has no review text "
                         f"(fields: {sorted(data.reviews) or 'none'})")
      summaries = data.reviews.get("summary", [""] * len(data.reviews["review"]))
      for summary, review in zip(summaries, data.reviews["review"]):
        summary, review = str(summary).strip(), str(review).strip()
        if summary and review:
          text = f"{summary}{'' if summary[-1] in '.!?' else '.'} {review}"
        else:
          text = summary or review
        if text and text not in seen:
          seen.add(text)
          self.lines.append(text)
    if not self.lines:
      raise ValueError(f"curriculum.general_reviews: {list(self.datasets)} hold no review text")
    self.path = "reviews:" + ",".join(self.datasets)


def modality_corpus(config, name: str, base, tokenizer=None, shard: int = 0,
                    num_shards: int = 1):
  """The training corpus of modality `name` (MODALITIES), shard `shard` of `num_shards`.

  `base` is the lm task's training UserCorpus of config.data (`pipeline.build_corpus`): its data,
  split and catalogue are used, so only `split.train` feeds rules and walks.
  """
  cur = config.curriculum
  if name == "general":
    reviews = [n.strip() for n in str(cur.get("general_reviews", "")).split(",") if n.strip()]
    if bool(cur.general_file) == bool(reviews):
      raise ValueError("curriculum.rates.general > 0 needs one of curriculum.general_file (a "
                       "text file, one document per line) and curriculum.general_reviews "
                       "(registry datasets with review text), not "
                       f"{'both' if reviews else 'neither'}")
    if not reviews:
      return _shard(TextFileCorpus(cur.general_file), shard, num_shards)
    own = config.data.dataset.get("name", "") if "dataset" in config.data else ""
    if own in reviews:
      raise ValueError(f"curriculum.general_reviews names {own!r}, the curriculum's own dataset: "
                       "its reviews describe the held-out items (leakage); use other datasets")
    return _shard(ReviewTextCorpus(reviews, config.data.get("root") or None), shard, num_shards)
  data, split, catalogue, domain = _base_parts(base)
  if name == "item_text":
    held = set(heldout_items(data.num_items, float(cur.item_text.heldout_fraction),
                             int(config.seed)).tolist())
    items = [i for i in range(1, data.num_items + 1) if i not in held]
    ids = id_texts(catalogue, data, str(cur.item_text.id), str(config.text.get("semantic_ids",
                                                                               "")))
    return _shard(AlignmentCorpus(data, catalogue, ids, items), shard, num_shards)
  if name == "rules":
    return _shard(RuleCorpus(_mined_rules(split, cur.rules), catalogue, str(cur.rules.template)),
                  shard, num_shards)
  if name == "walks":
    graph = walks_lib.cooccurrence_graph(split.train, data.num_items,
                                         int(cur.walks.graph_window))
    return walk_corpus(graph, catalogue, cur.walks, shard=shard, num_shards=num_shards,
                       domain=domain, tokenizer=tokenizer, max_tokens=_budget(config, tokenizer))
  if name == "histories":
    return _shard(base, shard, num_shards)
  raise ValueError(f"unknown curriculum modality {name!r}; choose from {MODALITIES}")


def build_curriculum(config, tokenizer=None, base=None, shard_index: int = 0,
                     shard_count: int = 1) -> Mixture:
  """The training mixture of `config.curriculum`: this process's shard of every modality.

  Each modality with a rate > 0 is a domain of the mixture (domain id = its position among
  those). Process `shard_index` of `shard_count` holds documents [shard_index::shard_count] of
  each corpus and only its own walks (start items [shard_index::shard_count]), so the mixture
  returned is already this process's part: feed it to the pipeline unsharded.
  """
  if base is None:
    from recjax.text import pipeline  # pylint: disable=g-import-not-at-top
    base = pipeline.build_corpus(config, "train", tokenizer)
  cur = config.curriculum
  domains = []
  for name in MODALITIES:
    rate = float(cur.rates[name])
    if rate < 0:
      raise ValueError(f"curriculum.rates.{name}={rate} is negative")
    if rate == 0:
      continue
    corpus = modality_corpus(config, name, base, tokenizer, shard_index, shard_count)
    if not len(corpus):
      raise ValueError(f"curriculum modality {name!r} has rate {rate} but no document (shard "
                       f"{shard_index} of {shard_count}); set curriculum.rates.{name}=0")
    data, split, catalogue, _ = _base_parts(base)
    domains.append(Domain(name, corpus, rate, data, split, catalogue))
  if not domains:
    raise ValueError("config.curriculum.rates are all 0: no modality to train on")
  length = int(cur.length)
  if length and shard_count > 1:
    length = -(-length // shard_count)
  return Mixture(domains, length=length or None, seed=int(config.seed))


def tokenizer_texts(config, limit: int = 0) -> list[str]:
  """Texts a SentencePiece model for the curriculum learns from: up to `limit` (0: all) mixture
  documents, a seeded subset in order, plus every item text of the catalogue."""
  mixture = build_curriculum(config, None)
  n = len(mixture) if not limit else min(limit, len(mixture))
  picks = np.sort(np.random.default_rng(int(config.seed)).permutation(len(mixture))[:n])
  catalogue = mixture.domains[0].catalogue
  return [mixture[int(i)].text for i in picks] + list(catalogue.texts[1:])


# --- Held-out corpora --------------------------------------------------------------------------


def heldout_corpora(config, base, tokenizer=None, split: str = "test",
                    names: Sequence[str] = HELDOUT_NAMES) -> list[EvalCorpus]:
  """The held-out perplexity corpora of the curriculum's modalities (`curriculum/<name>`).

  - item_text: alignment sentences of the held-out items (`item_text.heldout_fraction`; all
    items when 0). The same corpus for "valid" and "test".
  - pairs_both_seen / pairs_one_unseen / pairs_both_unseen: (history item, target) pairs of the
    `split` users (`cooccurrence.heldout_pairs`), by how many of the two items occur in
    `split.train`, as `eval.pair_template` sentences whose answer is b.
  - histories_heldout_users: each `split` user's history followed by the held-out target.
  - histories_full_graph: walks on the co-occurrence graph of ALL interactions (valid and test
    included), `eval.full_graph_walks_per_node` per item, seed `walks.seed + 1`.
  A corpus with no document (e.g. no pair with both items unseen) is left out, with a warning.
  """
  if split not in ("valid", "test"):
    raise ValueError(f"split must be valid or test, got {split!r}")
  unknown = [n for n in names if n not in HELDOUT_NAMES]
  if unknown:
    raise ValueError(f"unknown curriculum evaluation corpora {unknown}; choose from "
                     f"{HELDOUT_NAMES}")
  cur = config.curriculum
  data, data_split, catalogue, domain = _base_parts(base)
  eval_set = data_split.valid if split == "valid" else data_split.test
  templates = str(cur.eval.history_templates) or str(cur.walks.templates)
  budget = _budget(config, tokenizer)
  max_items = int(config.text.max_history_items)
  out = []
  for name in names:
    if name == "item_text":
      items = heldout_items(data.num_items, float(cur.item_text.heldout_fraction),
                            int(config.seed))
      ids = id_texts(catalogue, data, str(cur.item_text.id),
                     str(config.text.get("semantic_ids", "")))
      corpus = AlignmentCorpus(data, catalogue, ids, items if len(items) else None)
      out.append(EvalCorpus(f"curriculum/{name}", corpus))
    elif name.startswith("pairs_"):
      a, b = cooccurrence.heldout_pairs(data_split.train, eval_set,
                                        int(cur.eval.pairs_window))[name[len("pairs_"):]]
      out.append(EvalCorpus(f"curriculum/{name}",
                            PairCorpus(a, b, catalogue, str(cur.eval.pair_template)),
                            has_answer=True))
    elif name == "histories_heldout_users":
      keep = np.flatnonzero(eval_set.histories.lengths >= 1)
      rows = [np.append(eval_set.histories[int(r)], eval_set.targets[int(r)]) for r in keep]
      corpus = HistoryCorpus(Sequences.from_lists(rows), catalogue, templates,
                             user=str(cur.walks.user), domain=domain, seed=int(config.seed),
                             max_history_items=max_items, tokenizer=tokenizer,
                             max_tokens=budget, meta={"user": eval_set.users[keep]})
      out.append(EvalCorpus(f"curriculum/{name}", corpus, has_answer=corpus.has_answer))
    else:  # histories_full_graph
      graph = walks_lib.cooccurrence_graph(data.sequences, data.num_items,
                                           int(cur.walks.graph_window))
      corpus = walk_corpus(graph, catalogue, cur.walks, seed=int(cur.walks.seed) + 1,
                           walks_per_node=int(cur.eval.full_graph_walks_per_node),
                           domain=domain, tokenizer=tokenizer, max_tokens=budget,
                           templates=templates)
      out.append(EvalCorpus(f"curriculum/{name}", corpus, has_answer=corpus.has_answer))
  kept = [c for c in out if len(c.documents)]
  for c in out:
    if not len(c.documents):
      logging.warning("%s (%s) has no document; it is not evaluated", c.name, split)
  return kept

