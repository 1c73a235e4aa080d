"""Grain text pipelines: packing, truncation, determinism, resume, per-host sharding."""
import collections

import numpy as np
import pytest

from recjax import tokenizer as tokenizer_lib
from recjax.data.splits import leave_one_out
from recjax.data.synthetic import make_synthetic
from recjax.text import item_text, pipeline, render

SEQ_LEN = 256


@pytest.fixture(scope="module")
def setup():
  data = make_synthetic(num_users=45, num_items=150, num_clusters=6, seed=2, min_length=3,
                        max_length=12)
  split = leave_one_out(data)
  tok = tokenizer_lib.ByteTokenizer()
  catalogue = item_text.ItemCatalogue.build(data, item_text.ItemTextConfig.short(), tok)
  corpus = render.UserCorpus(data, split, "calrec,profile,p5_seq_1", catalogue=catalogue,
                             tokenizer=tok, max_tokens=SEQ_LEN // 2)
  return corpus, tok


def _expected(corpus, tok, seq_len=SEQ_LEN, indices=None):
  """Counter of per-document feature tuples, as the pipeline should emit them."""
  out = collections.Counter()
  for i in (range(len(corpus)) if indices is None else indices):
    arrays = render.encode_document(corpus[i], tok)
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
  config = pipeline.PipelineConfig(**kwargs)
  return list(pipeline.make_text_dataset(corpus, tok, config, *shard))


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
    by_tokens[tuple(render.encode_document(doc, tok)["tokens"].tolist())] = doc
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
