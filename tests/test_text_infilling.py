"""GLM blank infilling (recjax.text.infilling): the exact layout of hand-made documents, 2D
positions, attention and loss masks, entity-aware span sampling, mask ratios, span order, the
rules for awkward input, and the transform inside the Grain pipeline with packing."""
import collections
import pickle

import numpy as np
import pytest

from recjax.data.splits import leave_one_out
from recjax.data.synthetic import make_synthetic
from recjax.text import encoding, infilling, item_text, pipeline, user_corpus
from recjax.text import tokenizer as tokenizer_lib


@pytest.fixture(scope="module")
def tok():
  t = tokenizer_lib.ByteTokenizer()
  t.add_special_tokens(tokenizer_lib.SpecialTokens())
  return t


@pytest.fixture(scope="module")
def ids(tok):
  return infilling.SpecialIds.from_tokenizer(tok)


def _example(tokens, entities=(), bos=2, eos=3, loss_mask=None):
  """An encoded document: BOS + tokens + EOS, entities as token [start, end) (1-based ids)."""
  toks = np.array([bos] + list(tokens) + [eos], np.int32)
  n = len(toks)
  entity_ids, entity_positions = np.zeros(n, np.int32), np.zeros(n, np.int32)
  for k, (a, b) in enumerate(entities, start=1):
    entity_ids[a:b] = k
    entity_positions[a:b] = np.arange(1, b - a + 1)
  e = len(entities)
  return {
      "tokens": toks,
      "loss_mask": (np.arange(n) > 0).astype(np.int32) if loss_mask is None
                   else np.asarray(loss_mask, np.int32),
      "entity_ids": entity_ids,
      "entity_positions": entity_positions,
      "entity_kinds": (entity_ids > 0).astype(np.int32),
      "domain_ids": np.full(n, 5, np.int32),
      "entity_spans": np.array(entities, np.int32).reshape(e, 2),
      "entity_span_kinds": np.ones(e, np.int32),
      "entity_span_items": np.arange(1, e + 1, dtype=np.int32) * 10,
      "entity_span_roles": np.ones(e, np.int32),
  }


def _config(kind=None, **kw):
  if kind is not None:
    kw.update({f"{k}_prob": float(k == kind) for k in infilling.KINDS})
  return infilling.GLMConfig(**kw)


def _pieces(out, sop):
  """[(slot of the piece's mask in Part A, piece input tokens, piece targets)] of an example."""
  tokens, prefix = out["tokens"], out["prefix_mask"].astype(bool)
  starts = [t for t in np.flatnonzero(~prefix) if tokens[t] == sop]
  ends = starts[1:] + [len(tokens)]
  return [(int(out["inter_positions"][a]), tokens[a:b], out["targets"][a:b])
          for a, b in zip(starts, ends)]


def _reconstruct(out, ids):
  """The document an example was made from: every mask replaced by its Part-B piece."""
  part_a = out["tokens"][out["prefix_mask"].astype(bool)].tolist()
  fills = {}
  for slot, inputs, targets in _pieces(out, ids.sop):
    assert inputs[0] == ids.sop and targets[-1] == ids.eop
    np.testing.assert_array_equal(inputs[1:], targets[:-1])  # teacher forcing, shifted by one
    fills[slot] = inputs[1:].tolist()
  assert all(part_a[s] in (ids.mask, ids.smask, ids.gmask) for s in fills)
  assert sum(t in (ids.mask, ids.smask, ids.gmask) for t in part_a) == len(fills)
  return [x for s, t in enumerate(part_a) for x in (fills[s] if s in fills else [t])]


# ------------------------------------------------------------------------------------------------
# The layout of a hand-made document.

# BOS a b [c d e] f [g h] EOS: tokens 10..17, entity 1 = slots 3..5, entity 2 = slots 7..8.
DOC = dict(tokens=[10, 11, 12, 13, 14, 15, 16, 17], entities=[(3, 6), (7, 9)])


def test_layout_of_a_hand_made_document(ids):
  ex = _example(**DOC)
  out = infilling.build_blank_example(ex, [(1, 2), (7, 9)], ["entity", "entity"], ids)
  m, sop, eop = ids.mask, ids.sop, ids.eop
  #                      Part A: BOS [M] b  c  d  e  f  [M] EOS | [sop] a | [sop] g  h
  np.testing.assert_array_equal(out["tokens"],
                                [2, m, 11, 12, 13, 14, 15, m, 3, sop, 10, sop, 16, 17])
  np.testing.assert_array_equal(out["targets"], [0] * 9 + [10, eop, 16, 17, eop])
  np.testing.assert_array_equal(out["loss_mask"], [0] * 9 + [1] * 5)
  np.testing.assert_array_equal(out["prefix_mask"], [1] * 9 + [0] * 5)
  np.testing.assert_array_equal(out["inter_positions"],
                                [0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 7, 7, 7])
  np.testing.assert_array_equal(out["intra_positions"],
                                [0, 0, 0, 1, 2, 3, 0, 0, 0, 1, 2, 1, 2, 3])
  # Entities follow their tokens: entity 1 stays in Part A, entity 2 is the last piece's input.
  np.testing.assert_array_equal(out["entity_ids"], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 2, 2])
  np.testing.assert_array_equal(out["entity_positions"],
                                [0, 0, 0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 1, 2])
  np.testing.assert_array_equal(out["entity_spans"], [[3, 6], [12, 14]])
  np.testing.assert_array_equal(out["entity_span_items"], [10, 20])
  np.testing.assert_array_equal(out["domain_ids"], [5] * 14)
  assert all(out[k].dtype == np.int32 for k in out)
  assert _reconstruct(out, ids) == ex["tokens"].tolist()

  # GLM's shuffled order: same Part A, pieces swapped, each still at its own mask's position.
  swapped = infilling.build_blank_example(ex, [(1, 2), (7, 9)], ["entity"] * 2, ids, order=[1, 0])
  np.testing.assert_array_equal(swapped["tokens"],
                                [2, m, 11, 12, 13, 14, 15, m, 3, sop, 16, 17, sop, 10])
  np.testing.assert_array_equal(swapped["targets"], [0] * 9 + [16, 17, eop, 10, eop])
  np.testing.assert_array_equal(swapped["inter_positions"],
                                [0, 1, 2, 3, 4, 5, 6, 7, 8, 7, 7, 7, 1, 1])
  np.testing.assert_array_equal(swapped["intra_positions"],
                                [0, 0, 0, 1, 2, 3, 0, 0, 0, 1, 2, 3, 1, 2])
  np.testing.assert_array_equal(swapped["entity_spans"], [[3, 6], [10, 12]])

  # 1D positions: a plain LM's 0..L-1 and no intra positions; nothing else changes.
  flat = infilling.build_blank_example(ex, [(1, 2), (7, 9)], ["entity"] * 2, ids,
                                       positions="1d")
  np.testing.assert_array_equal(flat["inter_positions"], np.arange(14))
  np.testing.assert_array_equal(flat["intra_positions"], np.zeros(14))
  np.testing.assert_array_equal(flat["tokens"], out["tokens"])

  # Sentence and document kinds write their own mask tokens.
  kinds = infilling.build_blank_example(ex, [(1, 3), (6, 9)], ["sentence", "document"], ids)
  np.testing.assert_array_equal(kinds["tokens"][:6], [2, ids.smask, 12, 13, 14, ids.gmask])
  with pytest.raises(ValueError, match="not sorted, disjoint"):
    infilling.build_blank_example(ex, [(7, 9), (1, 2)], ["entity"] * 2, ids)
  with pytest.raises(ValueError, match="not a permutation"):
    infilling.build_blank_example(ex, [(1, 2)], ["entity"], ids, order=[1])


def _two_packed(ids):
  """Two small examples packed into one row of 12 (one padding slot)."""
  # Example 1: BOS a b EOS with span 'a'; example 2: BOS c EOS with span 'c'.
  one = infilling.build_blank_example(_example([10, 11]), [(1, 2)], ["entity"], ids)
  two = infilling.build_blank_example(_example([12]), [(1, 2)], ["entity"], ids)
  row = {k: np.concatenate([one[k], two[k], [0]]) for k in infilling.FEATURES + ("tokens",)}
  row["segment_ids"] = np.array([1] * 6 + [2] * 5 + [0])
  return one, two, row


def test_attention_and_loss_masks_of_a_packed_row(ids):
  one, two, row = _two_packed(ids)
  np.testing.assert_array_equal(one["tokens"], [2, ids.mask, 11, 3, ids.sop, 10])
  np.testing.assert_array_equal(two["tokens"], [2, ids.mask, 3, ids.sop, 12])
  np.testing.assert_array_equal(row["prefix_mask"], [1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(one["loss_mask"], [0, 0, 0, 0, 1, 1])
  # Row q lists the keys query q sees. Part A: all of its own Part A; Part B: its Part A and
  # earlier Part B; nothing across examples; padding (segment 0) sees nothing.
  want = ["111100000000",
          "111100000000",
          "111100000000",
          "111100000000",
          "111110000000",
          "111111000000",
          "000000111000",
          "000000111000",
          "000000111000",
          "000000111100",
          "000000111110",
          "000000000000"]
  want = np.array([[c == "1" for c in line] for line in want])
  np.testing.assert_array_equal(infilling.attention_mask(row["segment_ids"], row["prefix_mask"]),
                                want)


def test_layout_through_the_backbone(tok, ids):
  """The features drive recjax's LLM as the layout says: Part A never sees Part B, a piece
  never sees later pieces, packed examples never see each other."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from recjax.models import llm  # pylint: disable=g-import-not-at-top
  model = llm.create_model("tiny_llama", seed=0, initializer_range=0.2, num_extra_positions=16,
                           vocab_size=tok.vocab_size)
  ex = _example(**DOC)
  glm = infilling.build_blank_example(ex, [(1, 2), (7, 9)], ["entity"] * 2, ids)
  _, two, _ = _two_packed(ids)

  def logits(examples):
    cat = lambda k: jnp.asarray(np.concatenate([e[k] for e in examples]))[None]
    seg = np.concatenate([np.full(len(e["tokens"]), i + 1) for i, e in enumerate(examples)])
    return np.asarray(model(cat("tokens"), positions=cat("inter_positions"),
                            segment_ids=jnp.asarray(seg)[None], attention_mask_kind="prefix",
                            prefix_mask=cat("prefix_mask").astype(bool),
                            extra_positions=cat("intra_positions")).logits[0])

  base = logits([glm, two])
  np.testing.assert_allclose(base[14:], logits([two]), atol=1e-5)  # packing isolates examples
  np.testing.assert_allclose(base[:14], logits([glm]), atol=1e-5)
  changed_b = dict(glm, tokens=glm["tokens"].copy())
  changed_b["tokens"][12] = 99  # an input of the second piece
  out = logits([changed_b])
  np.testing.assert_allclose(out[:12], base[:12], atol=1e-5)  # Part A and earlier Part B
  assert not np.allclose(out[12:14], base[12:14], atol=1e-4)
  changed_a = dict(glm, tokens=glm["tokens"].copy())
  changed_a["tokens"][8] = 99  # the last Part-A token (EOS), seen by every token
  assert not np.allclose(logits([changed_a])[0], base[0], atol=1e-4)  # bidirectional Part A
  moved = dict(glm, intra_positions=np.zeros_like(glm["intra_positions"]))
  assert not np.allclose(logits([moved])[9:], base[9:14], atol=1e-4)  # intra positions count


# ------------------------------------------------------------------------------------------------
# Sampling over many random documents.


def _random_example(rng, n_min=20, n_max=120, long_entities=False):
  """Random tokens with random non-adjacent-or-adjacent entities, some longer than 39."""
  n = int(rng.integers(n_min, n_max))
  entities, t = [], 1
  while t < n:
    gap = int(rng.integers(0, 4))
    length = int(rng.integers(1, 60 if long_entities and rng.random() < 0.1 else 8))
    if t + gap + length > n + 1:
      break
    if rng.random() < 0.6:
      entities.append((t + gap, t + gap + length))
    t += gap + length
  tokens = rng.integers(10, 100, n)
  tokens[rng.random(n) < 0.08] = ord(".") + 4  # sentence ends, some inside entities
  return _example(tokens.tolist(), entities)


def _masked(out, ids):
  """Token indices of the document that went to Part B (walking Part A, masks expanded)."""
  masked, doc_slot = [], 0
  pieces = {slot: len(inputs) - 1 for slot, inputs, _ in _pieces(out, ids.sop)}
  for slot in range(int(out["prefix_mask"].sum())):
    if slot in pieces:
      masked += list(range(doc_slot, doc_slot + pieces[slot]))
      doc_slot += pieces[slot]
    else:
      doc_slot += 1
  return np.array(masked, np.int64)


@pytest.mark.parametrize("kind", infilling.KINDS)
def test_no_span_ever_cuts_an_entity(tok, ids, kind):
  cut = {"entity": 0, "token": 0}
  for masking in ("entity", "token"):
    transform = infilling.BlankInfilling(tok, _config(kind, masking=masking), seq_len=4096)
    for seed in range(150):
      rng = np.random.default_rng(seed)
      ex = _random_example(rng, long_entities=True)
      out = transform.random_map(ex, rng)
      assert _reconstruct(out, ids) == ex["tokens"].tolist()
      masked = np.zeros(len(ex["tokens"]), bool)
      masked[_masked(out, ids)] = True
      assert not masked[0] and not masked[-1]  # BOS and EOS stay in Part A
      for a, b in ex["entity_spans"]:
        cut[masking] += int(0 < masked[a:b].sum() < b - a)
  assert cut["entity"] == 0
  if kind != "document":  # the ablation does cut entities (so the check above can fail)
    assert cut["token"] > 0


def test_mask_ratios_over_many_documents(tok, ids):
  ratios = collections.defaultdict(list)
  lengths = []
  for kind in infilling.KINDS:
    transform = infilling.BlankInfilling(tok, _config(kind), seq_len=4096)
    for seed in range(300):
      rng = np.random.default_rng(seed)
      ex = _random_example(rng, 60, 200)
      out = transform.random_map(ex, rng)
      n = len(ex["tokens"]) - 2
      ratios[kind].append(len(_masked(out, ids)) / n)
      if kind == "entity":
        lengths += [len(inputs) - 1 for _, inputs, _ in _pieces(out, ids.sop)]
  entity, sentence, doc = (np.array(ratios[k]) for k in infilling.KINDS)
  assert entity.min() >= 0.15 and entity.mean() <= 0.2, entity.mean()  # all feasible here
  assert sentence.min() >= 0.15 and sentence.mean() <= 0.4, sentence.mean()
  assert doc.min() >= 0.5 and doc.max() <= 1.0 and abs(doc.mean() - 0.75) < 0.05, doc.mean()
  assert 2.5 <= np.mean(lengths) <= 5.0, np.mean(lengths)  # Poisson(3), whole entities


def test_span_lengths_follow_truncated_poisson_without_entities(tok, ids):
  probs = infilling.span_length_probs(3.0, 39)
  assert len(probs) == 39 and abs(probs.sum() - 1) < 1e-12
  assert abs(np.dot(np.arange(1, 40), probs) - 3 / (1 - np.exp(-3))) < 1e-9  # zero-truncated
  transform = infilling.BlankInfilling(tok, _config("entity", masking="token"), seq_len=4096)
  lengths = []
  for seed in range(200):
    rng = np.random.default_rng(seed)
    out = transform.random_map(_example(rng.integers(10, 100, 400).tolist()), rng)
    lengths += [len(inputs) - 1 for _, inputs, _ in _pieces(out, ids.sop)]
  # Spans are cut short only where a neighbour span blocks them.
  assert max(lengths) <= 39 and 2.7 <= np.mean(lengths) <= 3.2, np.mean(lengths)


def test_shuffled_and_chronological_orders_of_the_same_document(tok, ids):
  differs = 0
  for seed in range(20):
    ex = _random_example(np.random.default_rng(100 + seed), 80, 120)
    outs = {}
    for order in ("chronological", "shuffled"):
      transform = infilling.BlankInfilling(tok, _config("entity", order=order), seq_len=4096)
      outs[order] = transform.random_map(ex, np.random.default_rng(seed))
    chrono, shuffled = outs["chronological"], outs["shuffled"]
    # The same spans: Part A is identical and the pieces are the same, reordered.
    part_a = lambda o: o["tokens"][o["prefix_mask"].astype(bool)].tolist()
    assert part_a(chrono) == part_a(shuffled)
    key = lambda p: (p[0], p[1].tolist(), p[2].tolist())
    pc = [key(p) for p in _pieces(chrono, ids.sop)]
    ps = [key(p) for p in _pieces(shuffled, ids.sop)]
    assert sorted(pc) == sorted(ps) and len(pc) >= 2
    assert [p[0] for p in pc] == sorted(p[0] for p in pc)  # text order
    differs += pc != ps
    assert _reconstruct(shuffled, ids) == ex["tokens"].tolist()
  assert differs >= 15


def test_deterministic_per_seed(tok):
  transform = infilling.BlankInfilling(tok, _config(), seq_len=4096)
  ex = _random_example(np.random.default_rng(3), 100, 101)
  a = transform.random_map(ex, np.random.default_rng(7))
  b = transform.random_map(ex, np.random.default_rng(7))
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  copy = pickle.loads(pickle.dumps(transform))  # as Grain worker processes get it
  c = copy.random_map(ex, np.random.default_rng(7))
  for k in a:
    np.testing.assert_array_equal(a[k], c[k])
  others = [transform.random_map(ex, np.random.default_rng(s))["tokens"] for s in range(8, 13)]
  assert any(len(o) != len(a["tokens"]) or (o != a["tokens"]).any() for o in others)


# ------------------------------------------------------------------------------------------------
# Awkward input.


def test_document_without_entities_is_token_span_masking(tok):
  for seed in range(10):
    ex = _example(np.random.default_rng(seed).integers(10, 100, 80).tolist())
    for kind in infilling.KINDS:
      outs = [infilling.BlankInfilling(tok, _config(kind, masking=m), 4096).random_map(
          ex, np.random.default_rng(seed)) for m in ("entity", "token")]
      for k in outs[0]:
        np.testing.assert_array_equal(outs[0][k], outs[1][k])


def test_entity_longer_than_the_span_limit_is_masked_whole(tok, ids):
  # BOS [50-token entity] EOS: the only unit; a sampled length <= 39 still masks all of it.
  ex = _example(list(range(10, 60)), [(1, 51)])
  out = infilling.BlankInfilling(tok, _config("entity"), 4096).random_map(
      ex, np.random.default_rng(0))
  (slot, inputs, targets), = _pieces(out, ids.sop)
  assert slot == 1 and len(inputs) == 51
  np.testing.assert_array_equal(out["intra_positions"][3:], np.arange(1, 52))
  # Next to other tokens it is masked whole or not at all (test_no_span_ever_cuts_an_entity).


def test_ratio_that_cannot_be_met_keeps_the_spans_that_fit(tok, ids):
  # a [10-token entity] b asked for 90% (11 of 12 tokens). Spans keep a unit between them:
  # masking 'a' or 'b' first leaves only the other end (2 of 12); masking the entity first
  # blocks both ends (10 of 12); only 'a' grown into the entity (a long sampled length) meets
  # it. The example keeps what fits.
  ex = _example([10] + list(range(20, 30)) + [11], [(2, 12)])
  seen = set()
  for seed in range(60):
    out = infilling.BlankInfilling(tok, _config("entity", mask_ratio=0.9), 4096).random_map(
        ex, np.random.default_rng(seed))
    seen.add(tuple(len(i) - 1 for _, i, _ in _pieces(out, ids.sop)))
    assert _reconstruct(out, ids) == ex["tokens"].tolist()
  assert {(1, 1), (10,)} <= seen <= {(1, 1), (10,), (11,)}, seen
  # One maskable token asked to be 15%: masked whole (100%). None: all Part A, no loss.
  one = infilling.BlankInfilling(tok, _config("sentence"), 64).random_map(
      _example([10]), np.random.default_rng(0))
  np.testing.assert_array_equal(one["tokens"], [2, ids.smask, 3, ids.sop, 10])
  for kind in infilling.KINDS:
    empty = infilling.BlankInfilling(tok, _config(kind), 64).random_map(
        _example([]), np.random.default_rng(0))
    np.testing.assert_array_equal(empty["tokens"], [2, 3])
    assert empty["loss_mask"].sum() == 0 and empty["prefix_mask"].all()


def test_sentences_end_at_punctuation_outside_entities(tok, ids):
  dot = ord(".") + 4
  # BOS x . [y . z] w . v EOS: the '.' inside the entity does not end a sentence.
  ex = _example([10, dot, 11, dot, 12, 13, dot, 14], [(3, 6)])
  transform = infilling.BlankInfilling(tok, _config("sentence"), 64)
  assert infilling.sentences(ex["tokens"], ex["entity_ids"], 1, 9,
                             transform.is_sentence_end) == [(1, 3), (3, 8), (8, 9)]
  assert infilling.sentences(ex["tokens"], ex["entity_ids"], 1, 9, transform.is_sentence_end,
                             entity_aware=False) == [(1, 3), (3, 5), (5, 8), (8, 9)]


def test_long_documents_are_cut_to_fit_seq_len(tok, ids):
  seq_len = 64
  for kind in infilling.KINDS:
    transform = infilling.BlankInfilling(tok, _config(kind), seq_len)
    for seed in range(30):
      rng = np.random.default_rng(seed)
      ex = _random_example(rng, 150, 300)
      out = transform.random_map(ex, rng)
      assert len(out["tokens"]) <= seq_len
      doc = _reconstruct(out, ids)
      assert doc == ex["tokens"][:len(doc)].tolist()  # a prefix of the document
      assert len(doc) >= seq_len // 2
      cut = len(doc)  # no entity straddles the cut
      assert all(not (a < cut < b) for a, b in ex["entity_spans"])
      assert len(out["entity_spans"]) == int((ex["entity_spans"][:, 0] < cut).sum())


def test_answer_as_gmask(tok, ids):
  # BOS p q | r [s t] EOS with the loss (the answer) from 'r' on.
  ex = _example([10, 11, 12, 13, 14], [(4, 6)], loss_mask=[0, 0, 0, 1, 1, 1, 1])
  transform = infilling.BlankInfilling(tok, _config("entity", target_as_gmask=True), 64)
  out = transform.random_map(ex, np.random.default_rng(0))
  np.testing.assert_array_equal(out["tokens"], [2, 10, 11, ids.gmask, 3, ids.sop, 12, 13, 14])
  np.testing.assert_array_equal(out["targets"][5:], [12, 13, 14, ids.eop])
  # A plain document (loss everywhere) is masked by the mixture as usual.
  plain = transform.random_map(_example([10, 11, 12, 13, 14]), np.random.default_rng(0))
  assert ids.gmask not in plain["tokens"].tolist()


def test_answer_prompt_is_the_training_layout_up_to_sop(tok, ids):
  # The prompt/answer document of test_answer_as_gmask, with an entity in the prompt: the
  # inference prompt of its prompt alone is the training example's Part A + [sop], exactly.
  ex = _example([10, 11, 12, 13, 14], [(1, 3), (4, 6)], loss_mask=[0, 0, 0, 1, 1, 1, 1])
  transform = infilling.BlankInfilling(tok, _config("entity", target_as_gmask=True), 64)
  train = transform.random_map(ex, np.random.default_rng(0))
  prompt = infilling.answer_prompt(_example([10, 11], [(1, 3)]), ids)
  n = len(prompt["tokens"])
  for key in ("tokens", "inter_positions", "intra_positions", "prefix_mask"):
    np.testing.assert_array_equal(prompt[key], train[key][:n], err_msg=key)
  assert prompt["tokens"][-1] == ids.sop and int(prompt["mask_position"]) == 3
  assert train["inter_positions"][n:].tolist() == [3, 3, 3]  # the answer sits at the mask
  one_d = infilling.answer_prompt(_example([10, 11], [(1, 3)]), ids, positions="1d")
  assert one_d["inter_positions"].tolist() == list(range(n))
  assert not one_d["intra_positions"].any()


def test_part_b_intra_entity_mode_is_what_dynamic_decoding_rebuilds(ids):
  from recjax.models import decoding  # pylint: disable=g-import-not-at-top
  # BOS a [b c] [d] e [f g] h EOS; one span over b..g: entities [b c], [d], [f g], e plain.
  ex = _example([10, 11, 12, 13, 14, 15, 16, 17], [(2, 4), (4, 5), (6, 8)])
  spans = [(2, 8)]
  span = infilling.build_blank_example(ex, spans, ["entity"], ids)
  entity = infilling.build_blank_example(ex, spans, ["entity"], ids, part_b_intra="entity")
  b = entity["prefix_mask"] == 0
  np.testing.assert_array_equal(span["intra_positions"][b], [1, 2, 3, 4, 5, 6, 7])
  #                     [sop] b  c  d  e  f  g
  np.testing.assert_array_equal(entity["intra_positions"][b], [1, 1, 2, 1, 2, 1, 2])
  for key in ("tokens", "targets", "inter_positions", "prefix_mask", "loss_mask"):
    np.testing.assert_array_equal(span[key], entity[key])
  # Generation with an entity trie over the document's entities gives the same positions.
  part_b = decoding.PartB(inter=np.array([2]), intra=np.array([1]),
                          entity_trie=decoding.Trie.from_sequences([[11, 12], [13], [15, 16]]))
  got = decoding.part_b_positions(part_b, entity["tokens"][b][1:][None])
  np.testing.assert_array_equal(np.asarray(got)[0], entity["intra_positions"][b][1:])
  with pytest.raises(ValueError, match="part_b_intra"):
    infilling.GLMConfig(part_b_intra="word")


def test_bad_config_and_tokenizer_errors():
  with pytest.raises(ValueError, match=r"config.text.glm.masking='word'"):
    infilling.GLMConfig(masking="word")
  with pytest.raises(ValueError, match=r"config.text.glm.positions"):
    infilling.GLMConfig(positions="3d")
  with pytest.raises(ValueError, match=r"config.text.glm.mask_ratio"):
    infilling.GLMConfig(mask_ratio=0)
  with pytest.raises(ValueError, match=r"must be > 0"):
    infilling.GLMConfig(entity_prob=0, sentence_prob=0, document_prob=0)
  with pytest.raises(ValueError, match=r"unknown keys \['ratio'\]"):
    infilling.GLMConfig.from_config({"ratio": 0.2})
  assert infilling.GLMConfig.from_config(pipeline.default_config().glm) == infilling.GLMConfig()
  with pytest.raises(ValueError, match=r"no '\[MASK\]'"):
    infilling.SpecialIds.from_tokenizer(tokenizer_lib.ByteTokenizer())
  with pytest.raises(ValueError, match="config.text.seq_len=4"):
    t = tokenizer_lib.ByteTokenizer()
    t.add_special_tokens(tokenizer_lib.SpecialTokens())
    infilling.BlankInfilling(t, infilling.GLMConfig(), 4)


# ------------------------------------------------------------------------------------------------
# In the Grain pipeline, before packing.


@pytest.fixture(scope="module")
def corpus(tok):
  data = make_synthetic(num_users=30, num_items=100, num_clusters=5, seed=2, min_length=3,
                        max_length=10)
  catalogue = item_text.ItemCatalogue.build(data, item_text.ItemTextConfig.short(), tok)
  return user_corpus.UserCorpus(data, leave_one_out(data), "calrec,profile", catalogue=catalogue,
                                tokenizer=tok, max_tokens=200)


def _glm_batches(corpus, tok, **kw):
  kw = dict(dict(seq_len=256, batch_size=3, drop_remainder=False, objective="glm",
                 num_packing_bins=4, glm=_config(entity_prob=0.6, sentence_prob=0.2,
                                                 document_prob=0.2)), **kw)
  return list(pipeline.make_text_dataset(corpus, tok, pipeline.PipelineConfig(**kw)))


@pytest.fixture(scope="module")
def sp_tok(corpus, tmp_path_factory):
  texts = [corpus[i].text for i in range(len(corpus))] + corpus.catalogue.texts[1:]
  path = tokenizer_lib.train_sentencepiece(texts, tmp_path_factory.mktemp("sp") / "m", 400)
  t = tokenizer_lib.SentencePieceTokenizer(path)
  t.add_special_tokens(tokenizer_lib.SpecialTokens())
  return t


@pytest.mark.parametrize("tok_name,pack", [("byte", True), ("byte", False),
                                           ("sentencepiece", True)])
def test_pipeline_packs_whole_glm_examples(corpus, request, tok_name, pack):
  tok = request.getfixturevalue("tok" if tok_name == "byte" else "sp_tok")
  ids = infilling.SpecialIds.from_tokenizer(tok)
  batches = _glm_batches(corpus, tok, pack=pack)
  again = _glm_batches(corpus, tok, pack=pack)
  for a, b in zip(batches, again):  # deterministic for the pipeline seed
    assert set(a) == set(b) and set(infilling.FEATURES) <= set(a)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  docs = collections.Counter(tuple(encoding.encode_document(corpus[i], tok)["tokens"].tolist())
                             for i in range(len(corpus)))
  found, masks = collections.Counter(), collections.Counter()
  for batch in batches:
    assert all(v.dtype == np.int32 and v.shape[1] == 256 for v in batch.values())
    for r in range(len(batch["tokens"])):
      seg = batch["segment_ids"][r]
      for s in set(np.unique(seg)) - {0}:
        where = np.flatnonzero(seg == s)
        ex = {k: batch[k][r][where] for k in infilling.FEATURES + ("tokens",)}
        n_a = int(ex["prefix_mask"].sum())
        # Each example keeps its own Part A, a prefix of its segment; loss on the rest.
        np.testing.assert_array_equal(ex["prefix_mask"], np.arange(len(where)) < n_a)
        np.testing.assert_array_equal(batch["loss_mask"][r][where], np.arange(len(where)) >= n_a)
        np.testing.assert_array_equal(ex["inter_positions"][:n_a], np.arange(n_a))
        found[tuple(_reconstruct(ex, ids))] += 1
        masks.update(t for t in ex["tokens"][:n_a].tolist()
                     if t in (ids.mask, ids.smask, ids.gmask))
  assert found == docs  # every document arrives once, whole, and reconstructs exactly
  assert all(masks[m] > 0 for m in (ids.mask, ids.smask, ids.gmask))
  if pack:
    assert max(b["segment_ids"].max() for b in batches) > 1


def test_config_block_reaches_the_chain(corpus, tok):
  config = pipeline.default_config()
  config.glm.positions = "1d"
  glm = infilling.GLMConfig.from_config(config.glm)
  batch = _glm_batches(corpus, tok, glm=glm)[0]
  for r in range(len(batch["tokens"])):
    real = batch["segment_ids"][r] > 0
    np.testing.assert_array_equal(batch["inter_positions"][r][real],
                                  batch["positions"][r][real])
    assert not batch["intra_positions"][r].any()
  assert "targets" not in _glm_batches(corpus, tok, objective="causal_lm")[0]


def test_show_prints_a_corrupted_example(tmp_path, capsys):
  from recjax.text import show  # pylint: disable=g-import-not-at-top
  config = tmp_path / "cfg.py"
  config.write_text(
      "import ml_collections\n"
      "def get_config():\n"
      "  c = ml_collections.ConfigDict()\n"
      "  c.data = ml_collections.ConfigDict(dict(dataset=dict(name='synthetic', num_users=50,\n"
      "      num_items=60, num_clusters=3, seed=0), root='', split='leave_one_out'))\n"
      "  c.text = ml_collections.ConfigDict(dict(templates='profile', seq_len=256,\n"
      "      objective='causal_lm'))\n"
      "  return c\n")
  assert show.main(["show", f"--config={config}", "--config.text.objective=glm",
                    "--tokenizer=byte", "--num_samples=2", "--max_examples=10"]) == 0
  out = capsys.readouterr().out
  assert out.count("GLM blank infilling:") == 2 and "Part A (" in out
  assert "Part B 1 (inter " in out and "<|endofpiece|>" in out
