"""Grain text pipelines: packing, truncation, determinism, resume, per-host sharding, entity
spans through the objective's transform chain and packing, the corpus a config describes."""
import collections

import grain
import numpy as np
import pytest

from recjax.data.splits import leave_one_out
from recjax.data.synthetic import make_synthetic
from recjax.text import document, encoding, item_text, pipeline, user_corpus
from recjax.text import tokenizer as tokenizer_lib

SEQ_LEN = 256


@pytest.fixture(scope="module")
def setup():
  data = make_synthetic(num_users=45, num_items=150, num_clusters=6, seed=2, min_length=3,
                        max_length=12)
  split = leave_one_out(data)
  tok = tokenizer_lib.ByteTokenizer()
  catalogue = item_text.ItemCatalogue.build(data, item_text.ItemTextConfig.short(), tok)
  corpus = user_corpus.UserCorpus(data, split, "calrec,profile,p5_seq_1", catalogue=catalogue,
                                  tokenizer=tok, max_tokens=SEQ_LEN // 2)
  return corpus, tok


def _expected(corpus, tok, seq_len=SEQ_LEN, indices=None):
  """Counter of per-document feature tuples, as the pipeline should emit them."""
  out = collections.Counter()
  for i in (range(len(corpus)) if indices is None else indices):
    arrays = encoding.encode_document(corpus[i], tok)
    out[tuple(tuple(arrays[k][:seq_len].tolist()) for k in (
        "tokens", "loss_mask", "entity_ids", "entity_positions", "entity_kinds"))] += 1
  return out


def _documents(batches, seq_len=SEQ_LEN):
  """Splits packed rows back into documents, checking segment ids and positions."""
  out = collections.Counter()
  for batch in batches:
    for k, v in batch.items():
      assert v.dtype == np.int32 and v.shape[1] == (seq_len if "target" not in k else
                                                     v.shape[1]), k
    for r in range(batch["tokens"].shape[0]):
      seg = batch["segment_ids"][r]
      n_real = int((seg > 0).sum())
      assert (seg[:n_real] > 0).all() and (seg[n_real:] == 0).all()  # padding at the end
      assert np.all(np.diff(seg[:n_real]) >= 0)  # documents are contiguous
      assert (batch["positions"][r][n_real:] == 0).all()
      for s in np.unique(seg[seg > 0]):
        where = np.flatnonzero(seg == s)
        assert where[0] == 0 or seg[where[0] - 1] == s - 1  # segments numbered 1, 2, ...
        np.testing.assert_array_equal(batch["positions"][r][where], np.arange(len(where)))
        out[tuple(tuple(batch[k][r][where].tolist()) for k in (
            "tokens", "loss_mask", "entity_ids", "entity_positions", "entity_kinds"))] += 1
  return out


def _run(corpus, tok, **kwargs):
  kwargs.setdefault("seq_len", SEQ_LEN)
  kwargs.setdefault("batch_size", 4)
  kwargs.setdefault("drop_remainder", False)
  shard = kwargs.pop("shard", (0, 1))
  transforms = kwargs.pop("transforms", None)
  config = pipeline.PipelineConfig(**kwargs)
  return list(pipeline.make_text_dataset(corpus, tok, config, *shard, transforms=transforms))


@pytest.mark.parametrize("pack", [True, False])
def test_every_token_arrives_once(setup, pack):
  corpus, tok = setup
  batches = _run(corpus, tok, pack=pack, num_packing_bins=6)
  assert _documents(batches) == _expected(corpus, tok)
  rows = sum(b["tokens"].shape[0] for b in batches)
  if pack:
    assert rows < len(corpus)  # several documents share rows
    assert max(b["segment_ids"].max() for b in batches) > 1
  else:
    assert rows == len(corpus)


def test_truncation_keeps_first_tokens(setup):
  corpus, tok = setup
  batches = _run(corpus, tok, seq_len=64)
  assert _documents(batches, 64) == _expected(corpus, tok, 64)


def test_pad_and_segment_layout(setup):
  corpus, tok = setup
  batch = _run(corpus, tok, batch_size=2)[0]
  pad = batch["segment_ids"] == 0
  assert (batch["tokens"][pad] == tok.pad_id).all()
  for key in ("loss_mask", "entity_ids", "entity_positions", "entity_kinds", "domain_ids"):
    assert (batch[key][pad] == 0).all()


def test_deterministic_for_seed(setup):
  corpus, tok = setup
  a = _run(corpus, tok, seed=5)
  b = _run(corpus, tok, seed=5)
  c = _run(corpus, tok, seed=6)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert any(not np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(a, c))


def test_resume_from_iterator_state(setup):
  corpus, tok = setup
  config = pipeline.PipelineConfig(seq_len=SEQ_LEN, batch_size=3, num_epochs=None,
                                   num_packing_bins=5, seed=1)
  ds = pipeline.make_text_dataset(corpus, tok, config)
  it = iter(ds)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(12)]  # crosses an epoch boundary (len(corpus) = 44)
  resumed = iter(pipeline.make_text_dataset(corpus, tok, config))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_hosts_get_disjoint_covering_shards(setup):
  corpus, tok = setup
  n = len(corpus)
  config = pipeline.PipelineConfig(even_shards=False, seed=3)
  shards = [[d.meta["index"] for d in pipeline.shard_documents(corpus, config, h, 3)]
            for h in range(3)]
  assert sorted(sum(shards, [])) == list(range(n))
  even = pipeline.PipelineConfig(seed=3)
  sizes = {len(pipeline.shard_documents(corpus, even, h, 3)) for h in range(3)}
  assert sizes == {n // 3}
  # Every epoch is reshuffled globally and the hosts again partition all documents.
  two = pipeline.PipelineConfig(seed=3, num_epochs=2, even_shards=False)
  second = []
  for h in range(3):
    docs = [d.meta["index"] for d in pipeline.shard_documents(corpus, two, h, 3)]
    assert len(docs) == 2 * len(shards[h]) and docs[:len(shards[h])] == shards[h]
    second += docs[len(shards[h]):]
  assert sorted(second) == list(range(n)) and second != sum(shards, [])
  # End to end: the two hosts' batches partition the single-host documents.
  host = [_documents(_run(corpus, tok, even_shards=False, shard=(h, 2))) for h in range(2)]
  assert host[0] + host[1] == _expected(corpus, tok)
  assert not set(host[0]) & set(host[1]) or all(
      host[0][k] + host[1][k] == _expected(corpus, tok)[k] for k in set(host[0]) & set(host[1]))


def test_target_tokens_align_with_documents(setup):
  corpus, tok = setup
  batches = _run(corpus, tok, target_len=48, num_packing_bins=6)
  by_tokens = {}
  for i in range(len(corpus)):
    doc = corpus[i]
    by_tokens[tuple(encoding.encode_document(doc, tok)["tokens"].tolist())] = doc
  checked = 0
  for batch in batches:
    for r in range(batch["tokens"].shape[0]):
      segs = set(np.unique(batch["segment_ids"][r])) - {0}
      assert segs == set(np.unique(batch["target_segment_ids"][r])) - {0}
      for s in segs:
        tokens = tuple(batch["tokens"][r][batch["segment_ids"][r] == s].tolist())
        target = batch["target_tokens"][r][batch["target_segment_ids"][r] == s]
        doc = by_tokens[tokens]
        if doc.meta["target_text"]:
          assert tok.decode(target) == doc.meta["target_text"][:48]
          checked += 1
  assert checked > 10


def test_worker_processes_match_in_process(setup):
  corpus, tok = setup
  batches = _run(corpus, tok, worker_count=1)
  assert _documents(batches) == _expected(corpus, tok)


# ------------------------------------------------------------------------------------------------
# Entity spans through encoding, the transform chain and packing.


@pytest.fixture(scope="module")
def sp_tok(setup, tmp_path_factory):
  corpus, _ = setup
  texts = [corpus[i].text for i in range(len(corpus))] + corpus.catalogue.texts[1:]
  path = tokenizer_lib.train_sentencepiece(texts, tmp_path_factory.mktemp("sp") / "m", 400)
  tok = tokenizer_lib.SentencePieceTokenizer(path)
  tok.add_special_tokens(tokenizer_lib.SpecialTokens())
  return tok


def _entity_texts(corpus, tok):
  """Token tuple of each document -> the text of each of its entities, in order."""
  out = {}
  for i in range(len(corpus)):
    doc = corpus[i]
    out[tuple(encoding.encode_document(doc, tok)["tokens"].tolist())] = [
        doc.text[s.start:s.end] for s in doc.spans]
  return out


def _assert_decodes_to(tok, ids, text, exact):
  decoded = tok.decode(ids)
  if exact:  # bytes: the span's tokens are exactly the entity's characters
    assert decoded == text
  else:  # subwords: a token may carry a neighbouring space or character along
    assert text in decoded and len(decoded.strip()) <= len(text) + 2, (decoded, text)


@pytest.mark.parametrize("tok_name", ["byte", "sentencepiece"])
def test_entity_spans_decode_to_entities_after_encoding(setup, sp_tok, tok_name):
  corpus, byte_tok = setup
  tok = byte_tok if tok_name == "byte" else sp_tok
  for i in range(0, len(corpus), 3):
    doc = corpus[i]
    arrays = encoding.encode_document(doc, tok)
    assert len(arrays["entity_spans"]) == len(doc.spans) > 0
    for k, (span, (a, b)) in enumerate(zip(doc.spans, arrays["entity_spans"])):
      _assert_decodes_to(tok, arrays["tokens"][a:b], doc.text[span.start:span.end],
                         tok_name == "byte")
      assert arrays["entity_span_kinds"][k] == document.ENTITY_KINDS[span.kind]
      assert arrays["entity_span_items"][k] == span.item
      assert arrays["entity_span_roles"][k] == document.ENTITY_ROLES.get(span.role, 0)
      assert (arrays["entity_ids"][a:b] == k + 1).all()


@pytest.mark.parametrize("tok_name,pack", [("byte", True), ("byte", False),
                                           ("sentencepiece", True)])
def test_entity_spans_decode_to_entities_after_packing(setup, sp_tok, tok_name, pack):
  corpus, byte_tok = setup
  tok = byte_tok if tok_name == "byte" else sp_tok
  texts = _entity_texts(corpus, tok)
  batches = _run(corpus, tok, pack=pack, num_packing_bins=6, max_entities=64)
  seen = 0
  for batch in batches:
    assert batch["entity_spans"].shape == batch["tokens"].shape[:1] + (64, 2)
    for r in range(batch["tokens"].shape[0]):
      seg, span_seg = batch["segment_ids"][r], batch["entity_span_segment_ids"][r]
      for s in set(np.unique(seg)) - {0}:
        doc_tokens = tuple(batch["tokens"][r][seg == s].tolist())
        slots = np.flatnonzero(span_seg == s)
        assert len(slots) == len(texts[doc_tokens])  # every entity, in order
        for k, j in enumerate(slots):
          a, b = batch["entity_spans"][r, j]
          assert (seg[a:b] == s).all() and (batch["entity_ids"][r][a:b] == k + 1).all()
          _assert_decodes_to(tok, batch["tokens"][r][a:b], texts[doc_tokens][k],
                             tok_name == "byte")
          seen += 1
      assert (batch["entity_spans"][r][span_seg == 0] == 0).all()
  assert seen == sum(len(t) for t in texts.values())
  if pack:
    assert max(b["segment_ids"].max() for b in batches) > 1  # spans really were offset


def test_truncation_clips_spans_and_caps_their_number(setup):
  corpus, tok = setup
  full = {}  # first 64 tokens -> (entity texts, token spans) of the whole document
  for i in range(len(corpus)):
    doc = corpus[i]
    arrays = encoding.encode_document(doc, tok)
    full[tuple(arrays["tokens"][:64].tolist())] = (
        [doc.text[s.start:s.end] for s in doc.spans], arrays["entity_spans"])
  clipped = 0
  for batch in _run(corpus, tok, seq_len=64, pack=False, max_entities=3):
    for r in range(batch["tokens"].shape[0]):
      n = int(batch["segment_ids"][r].sum())
      texts, spans = full[tuple(batch["tokens"][r][:n].tolist())]
      slots = np.flatnonzero(batch["entity_span_segment_ids"][r])
      assert len(slots) == min(3, int((spans[:, 0] < 64).sum()))
      for k, j in enumerate(slots):
        a, b = batch["entity_spans"][r, j]
        assert (a, b) == (spans[k, 0], min(spans[k, 1], 64))
        assert texts[k].startswith(tok.decode(batch["tokens"][r][a:b]))
        clipped += int(spans[k, 1] > 64)
  assert clipped > 0


class _LossOnTargetItem(grain.transforms.Map):
  """Test objective: the loss on the target item's tokens only, found through the spans."""

  def map(self, example):
    loss = np.zeros_like(example["loss_mask"])
    for (a, b), role in zip(example["entity_spans"], example["entity_span_roles"]):
      if role == document.ENTITY_ROLES["target"]:
        loss[a:b] = 1
    return dict(example, loss_mask=loss)


def test_transform_chain_reads_spans_before_packing(setup):
  corpus, tok = setup
  batches = _run(corpus, tok, num_packing_bins=6, transforms=[_LossOnTargetItem()])
  target_texts, found = collections.Counter(), collections.Counter()
  for i in range(len(corpus)):
    if corpus[i].meta["target_text"] and corpus[i].target_start:
      target_texts[corpus[i].meta["target_text"]] += 1
  for batch in batches:
    for r in range(batch["tokens"].shape[0]):
      seg, loss = batch["segment_ids"][r], batch["loss_mask"][r]
      for s in set(np.unique(seg)) - {0}:
        where = (seg == s) & (loss > 0)
        if where.any():
          found[tok.decode(batch["tokens"][r][where])] += 1
  assert found == target_texts and sum(found.values()) > 10
  # The default chain (config.objective = "causal_lm") is the identity.
  plain = _run(corpus, tok, num_packing_bins=6)
  named = _run(corpus, tok, num_packing_bins=6, transforms="causal_lm")
  for x, y in zip(plain, named):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  with pytest.raises(ValueError, match="text.objective='glm_typo'"):
    _run(corpus, tok, objective="glm_typo")


class _DropRandomEntityLoss(grain.transforms.RandomMap):
  """Test objective with randomness: no loss on one randomly chosen entity."""

  def random_map(self, example, rng):
    loss = example["loss_mask"].copy()
    if len(example["entity_spans"]):
      a, b = example["entity_spans"][rng.integers(len(example["entity_spans"]))]
      loss[a:b] = 0
    return dict(example, loss_mask=loss)


def test_random_transforms_are_deterministic_and_resumable(setup):
  corpus, tok = setup
  config = pipeline.PipelineConfig(seq_len=SEQ_LEN, batch_size=3, num_epochs=None, seed=4)
  chain = [_DropRandomEntityLoss()]
  it = iter(pipeline.make_text_dataset(corpus, tok, config, transforms=chain))
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(20)]  # crosses an epoch: new draws for the same docs
  resumed = iter(pipeline.make_text_dataset(corpus, tok, config, transforms=chain))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  plain = iter(pipeline.make_text_dataset(corpus, tok, config))
  for _ in range(5):
    next(plain)
  masked = sum(int((p["loss_mask"] != w["loss_mask"]).sum())
               for p, w in zip((next(plain) for _ in range(20)), expected))
  assert masked > 0


# ------------------------------------------------------------------------------------------------
# The corpus an experiment config describes.


def test_temporal_fractions_reach_the_corpus():
  import ml_collections  # pylint: disable=g-import-not-at-top
  from recjax.data import registry, splits  # pylint: disable=g-import-not-at-top
  spec = dict(name="synthetic", num_users=150, num_items=120, num_clusters=5, seed=3)
  config = ml_collections.ConfigDict(dict(
      seed=0, text=pipeline.default_config(),
      data=dict(dataset=spec, root="", split="temporal", valid_fraction=0.2,
                test_fraction=0.1)))
  corpus = pipeline.build_corpus(config, "valid")
  data = registry.load_dataset(spec)
  want = splits.temporal(data, valid_fraction=0.2, test_fraction=0.1)
  np.testing.assert_array_equal(corpus.split.train.lengths, want.train.lengths)
  np.testing.assert_array_equal(corpus.split.valid.targets, want.valid.targets)
  # Training keeps the interactions before the 1 - 0.2 - 0.1 quantile of time.
  assert abs(corpus.split.train.lengths.sum() / data.num_interactions - 0.7) < 0.01
  default = splits.temporal(data)
  assert corpus.split.train.lengths.sum() < default.train.lengths.sum()
  config.text.objective = "glm_typo"
  with pytest.raises(ValueError, match="config.text.objective='glm_typo'"):
    pipeline.build_corpus(config, "train")
