"""Grain pipelines from text corpora to fixed-length token batches.

  documents (UserCorpus / ItemCorpus / Mixture; random access)
    -> global shuffle (seeded; reshuffled every epoch) -> this host's shard (index::count)
    -> repeat -> encode (tokens, per-token and per-entity arrays)
    -> the objective's transform chain (recjax.text.transforms; `objective` / `text.objective`)
    -> truncate to seq_len -> pack (first-fit, like MaxText) or pad -> batch
    -> [multiprocess prefetch]

Every batch is a dict of int32 arrays [batch, seq_len]:
  tokens            token ids (padding: tokenizer.pad_id)
  segment_ids       1, 2, ... per packed document in a row; 0 on padding
  positions         0, 1, ... restarting at every document
  loss_mask         1 where the LM loss counts (targets; every token of plain documents)
  entity_ids        k inside the k-th entity of its document (unique only with segment_ids)
  entity_positions  1..n inside an entity (intra-entity position), 0 elsewhere
  entity_kinds      document.ENTITY_KINDS code, 0 outside entities
  domain_ids        the document's domain (mixture index; 0 for a single corpus)
plus the per-token features the objective's chain adds: objective "glm" (recjax.text.infilling)
`targets` (what each token predicts; loss_mask then marks Part B), `prefix_mask` (Part A),
`inter_positions` and `intra_positions` (2D positions); and, with `target_len > 0` (CALRec's
item tower), `target_tokens`, `target_segment_ids` and `target_positions` [batch, target_len]:
the target item's text alone, packed in the same row and under the same segment id as the
document it belongs to; and, with `max_entities > 0`, the entities as spans,
[batch, max_entities] (slot j of a row):
  entity_spans            [batch, max_entities, 2] token [start, end) in the row
  entity_span_segment_ids segment of the document the entity is in; 0 on an empty slot
  entity_span_kinds / entity_span_items / entity_span_roles  kind code, item id, role code
The k-th entity of segment s is the k-th slot with `entity_span_segment_ids == s`, and its tokens
are those with `segment_ids == s` and `entity_ids == k`.

Truncation (the only way a token is lost): a document longer than `seq_len` keeps its first
`seq_len` tokens (its entity spans are clipped there; entities starting beyond it are dropped);
a target longer than `target_len` keeps its first `target_len` tokens; with `max_entities > 0`
a document keeps the spans of its first `max_entities` entities. Build corpora with
`max_tokens <= seq_len` so histories are shortened by whole items instead.
The iterator is checkpointable (`get_state`/`set_state`) and deterministic for a seed.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Sequence

import grain
import numpy as np

from recjax.text import document
from recjax.text import encoding
from recjax.text import infilling
from recjax.text import transforms as transforms_lib

SEQUENCE_FEATURES = ("tokens", "loss_mask", "entity_ids", "entity_positions", "entity_kinds",
                     "domain_ids")
SPAN_FEATURES = encoding.SPAN_FEATURES


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Knobs of `make_text_dataset`."""

  seq_len: int = 512  # tokens per row; MaxText-style packed rows
  batch_size: int = 8  # rows per batch on this host
  pack: bool = True  # first-fit packing of several documents per row (False: one per row)
  num_packing_bins: int = 0  # rows packed at once; 0 -> batch_size. More bins, less padding
  shuffle: bool = True  # global, seeded shuffle of documents, different every epoch
  seed: int = 0
  num_epochs: int | None = 1  # None repeats forever (use this for multi-host training)
  drop_remainder: bool = True  # drop a last partial batch (keeps shapes static under jit)
  even_shards: bool = True  # drop the < shard_count last documents so hosts get equal counts
  add_bos: bool = True
  add_eos: bool = True
  target_len: int = 0  # > 0: also emit target_tokens (the target item's text alone)
  read_threads: int = 0  # threads of to_iter_dataset; 0 = tokenize in the consumer thread
  worker_count: int = 0  # > 0: tokenize/pack in this many processes (grain mp_prefetch)
  worker_buffer_size: int = 2
  objective: str = "causal_lm"  # transform chain (transforms.CHAINS) when none is passed
  max_entities: int = 0  # > 0: also emit entity spans, this many slots per row; 0: spans end
                         # with the chain (the per-token entity arrays always stay)
  glm: infilling.GLMConfig = infilling.GLMConfig()  # objective "glm" (config.text.glm)


class EncodeDocument(grain.transforms.Map):
  """Document -> encoded example (see recjax.text.transforms), whole: truncation comes later."""

  def __init__(self, tokenizer, add_bos: bool = True, add_eos: bool = True,
               target_len: int = 0, domain_id: int = 0):
    self.tokenizer = tokenizer
    self.add_bos, self.add_eos = add_bos, add_eos
    self.target_len, self.domain_id = target_len, domain_id

  def map(self, doc: document.Document) -> dict[str, np.ndarray]:
    out = encoding.encode_document(doc, self.tokenizer, self.add_bos, self.add_eos)
    domain = doc.meta.get("domain_id", self.domain_id)
    out["domain_ids"] = np.full(len(out["tokens"]), domain, np.int32)
    if self.target_len:
      text = doc.meta.get("target_text", "")
      enc = self.tokenizer.encode(text, add_bos=False, add_eos=False)
      ids = enc.ids[:self.target_len]
      # An empty target still takes one slot so that the row structure stays aligned.
      out["target_tokens"] = ids if len(ids) else np.array([self.tokenizer.pad_id], np.int32)
    return out


class TruncateExample(grain.transforms.Map):
  """Keeps the first `seq_len` tokens and the spans inside them (at most `max_entities`).

  Spans are clipped at `seq_len`; those starting at or after it are dropped. With
  `max_entities == 0` the per-entity arrays are dropped altogether (nothing after the chain
  reads them).
  """

  def __init__(self, seq_len: int, max_entities: int = 0,
               features: Sequence[str] = SEQUENCE_FEATURES):
    self.seq_len, self.max_entities, self.features = seq_len, max_entities, tuple(features)

  def map(self, example: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {k: v for k, v in example.items() if k not in SPAN_FEATURES}
    for k in self.features:
      out[k] = example[k][:self.seq_len]
    if self.max_entities:
      spans = example["entity_spans"]
      keep = np.flatnonzero(spans[:, 0] < self.seq_len)[:self.max_entities]
      for k in SPAN_FEATURES:
        out[k] = example[k][keep]
      out["entity_spans"] = np.minimum(out["entity_spans"], self.seq_len).astype(np.int32)
    return out


def _pad_one(example: dict[str, np.ndarray], seq_len: int, target_len: int,
             pad_id: int, max_entities: int = 0,
             features: Sequence[str] = SEQUENCE_FEATURES) -> dict[str, np.ndarray]:
  """One document per row: pad to length, segment id 1 on real tokens (and real spans)."""
  n = len(example["tokens"])
  out = {}
  for k in features:
    row = np.full(seq_len, pad_id if k == "tokens" else 0, np.int32)
    row[:n] = example[k]
    out[k] = row
  out["segment_ids"] = (np.arange(seq_len) < n).astype(np.int32)
  out["positions"] = np.where(out["segment_ids"], np.arange(seq_len), 0).astype(np.int32)
  if target_len:
    t = example["target_tokens"]
    out["target_tokens"] = np.full(target_len, pad_id, np.int32)
    out["target_tokens"][:len(t)] = t
    out["target_segment_ids"] = (np.arange(target_len) < len(t)).astype(np.int32)
    out["target_positions"] = np.where(out["target_segment_ids"], np.arange(target_len),
                                       0).astype(np.int32)
  if max_entities:
    e = len(example["entity_spans"])
    for k in SPAN_FEATURES:
      out[k] = np.zeros((max_entities,) + example[k].shape[1:], np.int32)
      out[k][:e] = example[k]
    out["entity_span_segment_ids"] = (np.arange(max_entities) < e).astype(np.int32)
  return out


def _rename_packed(example: dict[str, Any],
                   features: Sequence[str] = SEQUENCE_FEATURES) -> dict[str, np.ndarray]:
  out = {k: np.asarray(example[k], np.int32) for k in features}
  out["segment_ids"] = example["tokens_segment_ids"]
  out["positions"] = example["tokens_positions"]
  if "target_tokens" in example:
    out["target_tokens"] = np.asarray(example["target_tokens"], np.int32)
    out["target_segment_ids"] = example["target_tokens_segment_ids"]
    out["target_positions"] = example["target_tokens_positions"]
  if "entity_spans" in example:
    # Spans were packed as document-relative token indices: move each to its segment's start.
    seg = out["segment_ids"]
    span_seg = np.asarray(example["entity_spans_segment_ids"], np.int32)
    ids, first = np.unique(seg, return_index=True)
    start_of = np.zeros(int(seg.max()) + 1, np.int32)
    start_of[ids] = first
    shift = np.where(span_seg > 0, start_of[span_seg], 0).astype(np.int32)
    out["entity_spans"] = np.asarray(example["entity_spans"], np.int32) + shift[:, None]
    out["entity_span_segment_ids"] = span_seg
    for k in SPAN_FEATURES[1:]:
      out[k] = np.asarray(example[k], np.int32)
  return out


def shard_documents(source: Sequence[Any] | grain.MapDataset, config: PipelineConfig,
                    shard_index: int = 0, shard_count: int = 1) -> grain.MapDataset:
  """The (shuffled, repeated) documents of one host: disjoint across hosts, covering all."""
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} outside [0, {shard_count})")
  ds = source if isinstance(source, grain.MapDataset) else grain.MapDataset.source(source)
  if config.shuffle:
    ds = ds.shuffle(seed=config.seed)
  if config.even_shards and shard_count > 1:
    ds = ds[:len(ds) - len(ds) % shard_count]
  ds = ds[shard_index::shard_count]
  if config.num_epochs != 1:
    ds = ds.repeat(config.num_epochs)
  return ds


def make_text_dataset(source: Sequence[Any] | grain.MapDataset, tokenizer,
                      config: PipelineConfig = PipelineConfig(), shard_index: int = 0,
                      shard_count: int = 1,
                      transforms: str | Sequence[Any] | None = None) -> grain.IterDataset:
  """Batches of packed (or padded) token rows from a random-access corpus of Documents.

  Args:
    source: a corpus (len + getitem returning `document.Document`), or a MapDataset of them.
    tokenizer: a recjax.text.tokenizer.Tokenizer (the one the corpus budgeted with, if any).
    config: pipeline knobs.
    shard_index: this host's index, e.g. `jax.process_index()`.
    shard_count: number of hosts, e.g. `jax.process_count()`.
    transforms: the per-example transforms between encoding and truncation: a chain name of
      `transforms.CHAINS`, a list of Grain transforms, or None for `config.objective`'s chain.

  Returns:
    A Grain IterDataset; `iter(ds)` is a checkpointable DatasetIterator.
  """
  chain = transforms_lib.resolve(transforms, tokenizer, config)
  ds = shard_documents(source, config, shard_index, shard_count)
  ds = ds.map(EncodeDocument(tokenizer, config.add_bos, config.add_eos, config.target_len))
  if chain:
    ds = ds.seed(config.seed).apply(chain)  # RandomMaps: seeded by the seed and the position
  # Per-token features: the encoder's, plus those the chain adds (GLM: targets, positions).
  features = SEQUENCE_FEATURES + tuple(f for f in transforms_lib.added_features(chain)
                                       if f not in SEQUENCE_FEATURES)
  ds = ds.map(TruncateExample(config.seq_len, config.max_entities, features))
  read = grain.ReadOptions(num_threads=config.read_threads,
                           prefetch_buffer_size=max(1, 4 * config.read_threads))
  it = ds.to_iter_dataset(read_options=read)
  pad_id = int(tokenizer.pad_id)
  if config.pack:
    length_struct = {k: config.seq_len for k in features}
    meta = [k for k in features if k != "tokens"]
    if config.target_len:
      length_struct["target_tokens"] = config.target_len
    if config.max_entities:
      length_struct.update({k: config.max_entities for k in SPAN_FEATURES})
      meta += SPAN_FEATURES[1:]  # entity_spans itself gets the segment ids
    padding = {k: (pad_id if k in ("tokens", "target_tokens") else 0) for k in length_struct}
    it = grain.experimental.FirstFitPackIterDataset(
        it,
        length_struct=length_struct,
        num_packing_bins=config.num_packing_bins or config.batch_size,
        shuffle_bins=False,
        meta_features=meta,
        padding_struct=padding,
    )
    it = it.map(functools.partial(_rename_packed, features=features))
  else:
    it = it.map(functools.partial(_pad_one, seq_len=config.seq_len,
                                  target_len=config.target_len, pad_id=pad_id,
                                  max_entities=config.max_entities, features=features))
  it = it.batch(config.batch_size, drop_remainder=config.drop_remainder)
  if config.worker_count > 0:
    _mark_flags_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=config.worker_count, per_worker_buffer_size=config.worker_buffer_size))
  return it


def _mark_flags_parsed():
  """Grain workers read absl flags; unparsed flags raise UnparsedFlagAccessError there."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def default_config():
  """The `config.text` block of LM experiment configs, every knob at its recommended value."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(dict(
      templates="calrec",      # template names/families (recjax.text.templates.select).
      targets="last",          # "last": one example per user; "all": every training position.
      tokenizer="byte",        # "byte", a SentencePiece .model or an HF tokenizer.json.
      semantic_codes=0,        # REC0..REC{n-1} special tokens to register (0: none, or with
                               # semantic_ids exactly the codes those IDs need).
      item_format="text",      # how items are written: "text", "semantic_id" (<RECTOKEN>
                               # REC.. </RECTOKEN>) or "both" (codes, then text); the last two
                               # need semantic_ids (recjax/text/semantic_text.py).
      semantic_ids="",         # a semantic-ID .npz (SemanticIds.save) or a workdir holding
                               # semantic_ids.npz (configs/semantic_ids.py); one dataset only.
      item_fields="title,brand,categories",  # item fields written in mentions, in order.
      item_max_chars=200,      # total characters per item mention (cut at a word boundary).
      max_history_items=50,    # most recent items a history may show.
      min_history_items=1,     # items kept even beyond the token budget (then truncated).
      num_candidates=19,       # negatives beside the positive in candidate prompts.
      seq_len=512,             # tokens per packed row; also the per-document token budget.
      batch_size=8,            # rows per batch per host.
      pack=True,               # pack several documents per row (segment ids / positions).
      target_len=0,            # > 0: also emit the target item's text alone (CALRec item tower).
      worker_count=0,          # Grain worker processes for tokenizing/packing (0: in-process).
      objective="causal_lm",   # per-example transform chain between encoding and packing
                               # (recjax.text.transforms.CHAINS). causal_lm: none (next-token
                               # loss on the document's loss_mask). glm: GLM blank infilling
                               # (text.glm below). Recommended: causal_lm.
      # GLM blank infilling (objective "glm", recjax.text.infilling; docs/text.md "GLM").
      glm=dict(
          entity_prob=0.5,     # share of examples with entity-level [MASK] spans (GLM-10B: 0.5).
          sentence_prob=0.3,   # share with sentence-level [sMASK] spans (GLM-10B: 0.3).
          document_prob=0.2,   # share with one document-level [gMASK] tail span (GLM-10B: 0.2).
          masking="entity",    # "entity": spans never cut an entity (RecSysLLM, recommended);
                               # "token": GLM's plain random spans (ablation).
          order="chronological",  # Part-B pieces in text order (RecSysLLM, recommended) or
                                  # "shuffled" (GLM).
          mask_ratio=0.15,     # [MASK] spans are added until this share is masked. 0.15.
          sentence_ratio=0.15,  # [sMASK] sentences are added until this share is masked. 0.15.
          mean_span=3.0,       # Poisson mean of [MASK] span lengths in tokens. 3.
          max_span=39,         # longest sampled span length (entities are never cut). 39.
          document_min_ratio=0.5,  # [gMASK] span: uniform in this..100% of the document. 0.5.
          positions="2d",      # "2d": inter (RoPE) + intra (learned table) positions;
                               # "1d": 0..L-1 only (ablation, or a backbone without the
                               # table). Recommended: 2d with model.num_extra_positions >=
                               # seq_len.
          part_b_intra="span",  # intra-positions in Part B: "span" (1..len+1 per piece, GLM;
                                # static positions at inference) or "entity" (restart at 1 at
                                # each entity; dynamic positions at inference, RecSysLLM).
          target_as_gmask=False,  # prompt/answer documents: the answer is the [gMASK] span
                                  # (multitask fine-tuning: True; pre-training: False).
      ),
      mixture=[],              # [{"dataset": {...}, "rate": r, "tag": t}, ...]; [] = config.data.
  ))


def build_tokenizer(text_config):
  """The tokenizer named by `config.text` with recjax's special tokens registered (and the
  semantic-code tokens `text.semantic_ids` needs when `text.semantic_codes` is 0)."""
  from recjax.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  codes = int(text_config.semantic_codes)
  if not codes and text_config.get("semantic_ids", ""):
    from recjax.text import semantic_text  # pylint: disable=g-import-not-at-top
    ids = semantic_text.load_semantic_ids(text_config.semantic_ids)
    codes = semantic_text.num_code_tokens(ids.codes, ids.shared_digits)
  return tokenizer_lib.load_tokenizer(text_config.tokenizer,
                                      tokenizer_lib.SpecialTokens(num_semantic_codes=codes))


def build_corpus(config, part: str = "train", tokenizer=None, seed: int | None = None):
  """The corpus an experiment config describes: `config.text` over `config.data` (or a mixture).

  Returns a `user_corpus.UserCorpus` for a single dataset, or a `mixture.Mixture` when
  `config.text.mixture` lists domains (then `part` must be "train"; evaluate per domain with
  `mixture.domains[i].eval_corpus(part)`). A temporal `config.data.split` uses
  `config.data.valid_fraction` / `test_fraction`. `config.text.objective` must name a chain of
  `transforms.CHAINS` (checked here, so a typo fails before any data is read).
  """
  # pylint: disable=g-import-not-at-top
  from recjax.data import registry
  from recjax.data import splits as splits_lib
  from recjax.text import item_text
  from recjax.text import mixture as mixture_lib
  from recjax.text import templates as templates_lib
  from recjax.text import user_corpus
  # pylint: enable=g-import-not-at-top
  text = config.text
  objective = str(text.get("objective", "causal_lm"))
  if objective not in transforms_lib.CHAINS:
    raise ValueError(f"config.text.objective={objective!r} is unknown; choose from "
                     f"{sorted(transforms_lib.CHAINS)}")
  if objective == "glm":
    infilling.GLMConfig.from_config(text.get("glm"))  # bad knobs fail before any data is read
  seed = config.get("seed", 0) if seed is None else seed
  item_config = item_text.ItemTextConfig(
      fields=tuple(f for f in str(text.item_fields).split(",") if f),
      total_max_chars=int(text.item_max_chars))
  kwargs = dict(templates=text.templates, targets=text.targets, tokenizer=tokenizer,
                max_tokens=int(text.seq_len) if tokenizer is not None else None,
                max_history_items=int(text.max_history_items),
                min_history_items=int(text.get("min_history_items", 1)),
                num_candidates=int(text.num_candidates))
  root = config.data.get("root", "") or None
  if text.mixture:
    if str(text.get("item_format", "text")) != "text":
      raise ValueError("config.text.item_format other than 'text' needs one dataset "
                       "(config.data), not config.text.mixture")
    if part != "train":
      raise ValueError("a mixture is a training corpus; evaluate per domain instead")
    specs = [dict(s) for s in text.mixture]
    return mixture_lib.build_mixture(specs, root, split=config.data.split,
                                     split_kwargs=split_kwargs(config.data),
                                     item_config=item_config, seed=seed, **kwargs)
  spec = config.data.dataset
  spec = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
  data = registry.load_dataset(spec, root)
  data_split = splits_lib.make_split(data, config.data.split, **split_kwargs(config.data))
  catalogue = item_text.ItemCatalogue.build(data, item_config, tokenizer)
  item_format = str(text.get("item_format", "text"))
  if item_format != "text":
    from recjax.text import semantic_text  # pylint: disable=g-import-not-at-top
    if not text.get("semantic_ids", ""):
      raise ValueError(f"config.text.item_format={item_format!r} needs config.text.semantic_ids "
                       "(a semantic-ID .npz or a workdir of configs/semantic_ids.py)")
    ids = semantic_text.load_semantic_ids(text.semantic_ids)
    catalogue = semantic_text.format_catalogue(catalogue, ids.codes, item_format, tokenizer,
                                               shared_digits=ids.shared_digits)
  domain = templates_lib.DOMAIN_NAMES.get(spec.get("name", ""), data.name)
  return user_corpus.UserCorpus(data, data_split, part=part, catalogue=catalogue,
                                domain=domain, seed=seed, **kwargs)


def split_kwargs(data_config) -> dict[str, float]:
  """The keyword arguments of `splits.make_split` that `config.data` sets for its protocol."""
  if data_config.get("split", "leave_one_out") != "temporal":
    return {}
  return dict(valid_fraction=float(data_config.get("valid_fraction", 0.1)),
              test_fraction=float(data_config.get("test_fraction", 0.1)))


def train_tokenizer(config, path) -> pathlib.Path:
  """Trains the SentencePiece model `lm.tokenizer_vocab_size` asks for, on what the lm task
  trains it on, and writes it to `path` (a `.model` file).

  Texts: `lm.tokenizer_max_documents` training documents (0: all; a seeded random subset, kept
  in corpus order) of the corpus `config` renders (or the lines of `lm.text_file`), plus every
  item text of its catalogue(s).
  """
  # pylint: disable=g-import-not-at-top
  from recjax.text import mixture as mixture_lib
  from recjax.text import tokenizer as tokenizer_lib
  # pylint: enable=g-import-not-at-top
  if config.lm.get("text_file", ""):
    with open(config.lm.text_file, encoding="utf-8") as f:
      corpus = [line.strip() for line in f if line.strip()]
    texts_of = lambda i: corpus[i]
    catalogues = []
  else:
    corpus = build_corpus(config, "train", None)
    texts_of = lambda i: corpus[i].text
    catalogues = ([d.catalogue for d in corpus.domains if d.catalogue is not None]
                  if isinstance(corpus, mixture_lib.Mixture) else [corpus.catalogue])
  limit = int(config.lm.get("tokenizer_max_documents", 0))
  n = len(corpus) if not limit else min(limit, len(corpus))
  picks = np.sort(np.random.default_rng(config.seed).permutation(len(corpus))[:n])
  texts = [texts_of(int(i)) for i in picks]
  for catalogue in catalogues:
    texts += catalogue.texts[1:]
  return tokenizer_lib.train_sentencepiece(texts, path, int(config.lm.tokenizer_vocab_size),
                                           seed=int(config.seed))
