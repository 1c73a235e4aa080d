"""CALRec's objective and training rows: numpy references on hand-made hidden states."""
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.data import registry, splits
from recjax.models import llm
from recjax.tasks.calrec import calrec_loss, pool_layer_arg
from recjax.text import calrec_pairs, item_text, user_corpus
from recjax.text import tokenizer as tokenizer_lib

B, T, TI, D, V = 4, 7, 4, 5, 11


class HandMade:
  """A 'model' that returns fixed hidden states and logits: whatever rows it is given, the
  joint rows get `joint` / `logits` and the item rows (shorter) get `item`."""

  def __init__(self, joint, logits, item):
    self.joint, self.logits, self.item = joint, logits, item

  def __call__(self, tokens, positions=None, segment_ids=None, return_hidden=False,
               compute_logits=True):
    del positions, segment_ids
    assert return_hidden is True
    if tokens.shape[1] == T:
      return llm.LLMOutput(logits=jnp.asarray(self.logits) if compute_logits else None,
                           hidden=jnp.asarray(self.joint))
    return llm.LLMOutput(logits=None, hidden=jnp.asarray(self.item))


def _batch(rng, pair_id=(1, 2, 3, 4), valid=(1, 1, 1, 1)):
  tokens = rng.integers(1, V, size=(B, T)).astype(np.int32)
  seg = np.ones((B, T), np.int32)
  seg[1, 5:] = 0  # row 1 is padded after 5 tokens
  # Row layout: BOS, prompt (user) tokens, target tokens, EOS, padding.
  user = np.zeros((B, T), np.int32)
  target = np.zeros((B, T), np.int32)
  user[:, 1:3] = 1
  target[:, 3:5] = 1
  target[0, 5] = 1  # row 0: a 3-token target
  loss = target.copy()
  loss[np.arange(B), [6, 5, 5, 5]] = 1  # EOS after the target
  loss[1, 5] = 0  # row 1's EOS position is padding: its target ends the row
  item_mask = np.zeros((B, TI), np.int32)
  item_mask[:, 1:3] = 1
  item_mask[0, 3] = 1
  return {
      "tokens": tokens, "segment_ids": seg, "positions": np.tile(np.arange(T), (B, 1)),
      "loss_mask": loss, "user_mask": user, "target_mask": target,
      "item_tokens": rng.integers(1, V, size=(B, TI)).astype(np.int32),
      "item_segment_ids": np.ones((B, TI), np.int32),
      "item_positions": np.tile(np.arange(TI), (B, 1)), "item_mask": item_mask,
      "pair_id": np.asarray(pair_id, np.int32), "valid": np.asarray(valid, np.int32)}


def _log_softmax(x, axis):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def _info_nce(q, k, ids, valid, temperature, bidirectional=True):
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  k = k / np.linalg.norm(k, axis=1, keepdims=True)
  logits = q @ k.T / temperature
  n = len(q)
  for i in range(n):
    for j in range(n):
      if i != j and (ids[i] == ids[j] or not valid[i] or not valid[j]):
        logits[i, j] = -np.inf
  forward = -np.diag(_log_softmax(logits, 1))
  per_pair = 0.5 * (forward - np.diag(_log_softmax(logits, 0))) if bidirectional else forward
  correct = np.argmax(logits, 1) == np.arange(n)
  return per_pair[valid].sum(), (correct & valid).sum()


def _reference(batch, joint, logits, item, temperature, w, bidirectional=True):
  valid = batch["valid"] > 0
  rows = len(valid)
  nig = 0.0
  for b in range(rows):
    terms = [-_log_softmax(logits[b, t], 0)[batch["tokens"][b, t + 1]] for t in range(T - 1)
             if batch["loss_mask"][b, t + 1] and batch["segment_ids"][b, t + 1] ==
             batch["segment_ids"][b, t] and batch["segment_ids"][b, t + 1] > 0]
    if valid[b]:
      nig += np.mean(terms)

  def pool(h, m):
    return np.stack([h[b][m[b] > 0].mean(0) for b in range(rows)])

  v_u, v_tu = pool(joint, batch["user_mask"]), pool(joint, batch["target_mask"])
  v_t = pool(item, batch["item_mask"])
  tt, tt_c = _info_nce(v_tu, v_t, batch["pair_id"], valid, temperature, bidirectional)
  ut, ut_c = _info_nce(v_u, v_t, batch["pair_id"], valid, temperature, bidirectional)
  return dict(total=w[0] * nig + w[1] * tt + w[2] * ut, count=valid.sum(), nig=nig, tt=tt,
              ut=ut, tt_ncorrect=tt_c, ut_ncorrect=ut_c)


def _hand_made(rng):
  return (rng.normal(size=(B, T, D)), rng.normal(size=(B, T, V)) * 2,
          rng.normal(size=(B, TI, D)))


@pytest.mark.parametrize("weights, bidirectional", [((0.8, 0.1, 0.1), True),
                                                    ((1.0, 0.5, 2.0), False),
                                                    ((0.0, 1.0, 0.0), True)])
def test_losses_match_numpy(weights, bidirectional):
  rng = np.random.default_rng(0)
  batch = _batch(rng)
  joint, logits, item = _hand_made(rng)
  total, count, metrics = calrec_loss(
      HandMade(joint, logits, item), batch, layer=True, temperature=0.1, w_nig=weights[0],
      w_tt=weights[1], w_ut=weights[2], bidirectional=bidirectional)
  ref = _reference(batch, joint, logits, item, 0.1, weights, bidirectional)
  np.testing.assert_allclose(float(total), ref["total"], rtol=1e-5)
  assert float(count) == ref["count"] == B
  for key in ("nig", "tt", "ut", "tt_ncorrect", "ut_ncorrect"):
    if key[:2] in ("tt", "ut") and not weights[1 + (key[:2] == "ut")]:
      assert float(metrics[key]) == 0.0  # a switched-off loss is not computed
    else:
      np.testing.assert_allclose(float(metrics[key]), ref[key], rtol=1e-5, atol=1e-6)


def test_pooling_reads_only_the_masked_tokens():
  """Huge values outside the masks (padding, BOS, EOS, the other tower's tokens) change
  nothing."""
  rng = np.random.default_rng(1)
  batch = _batch(rng)
  joint, logits, item = _hand_made(rng)
  args = dict(layer=True, temperature=0.1, w_nig=0.0, w_tt=1.0, w_ut=1.0)
  base = calrec_loss(HandMade(joint, logits, item), batch, **args)
  noisy_joint, noisy_item = joint.copy(), item.copy()
  outside = (batch["user_mask"] == 0) & (batch["target_mask"] == 0)
  noisy_joint[outside] = 1e4
  noisy_item[batch["item_mask"] == 0] = -1e4
  noisy = calrec_loss(HandMade(noisy_joint, logits, noisy_item), batch, **args)
  np.testing.assert_allclose(float(noisy[0]), float(base[0]), rtol=1e-6)
  # ... while changing one masked user token does change L_UT.
  noisy_joint = joint.copy()
  noisy_joint[2, 1] += 3.0
  changed = calrec_loss(HandMade(noisy_joint, logits, item), batch, **args)
  assert float(changed[2]["ut"]) != pytest.approx(float(base[2]["ut"]))
  assert float(changed[2]["tt"]) == pytest.approx(float(base[2]["tt"]))


def test_duplicate_next_items_are_not_negatives_and_invalid_rows_add_nothing():
  rng = np.random.default_rng(2)
  joint, logits, item = _hand_made(rng)
  args = dict(layer=True, temperature=0.1, w_nig=0.5, w_tt=1.0, w_ut=1.0)
  dup = _batch(rng, pair_id=(7, 3, 7, 5))
  dup["item_tokens"][2] = dup["item_tokens"][0]
  item[2] = item[0]  # the same item's text alone gives the same v_T
  total, _, metrics = calrec_loss(HandMade(joint, logits, item), dup, **args)
  ref = _reference(dup, joint, logits, item, 0.1, (0.5, 1.0, 1.0))
  np.testing.assert_allclose(float(total), ref["total"], rtol=1e-5)
  distinct = dict(dup, pair_id=np.asarray([7, 3, 6, 5], np.int32))
  unmasked = calrec_loss(HandMade(joint, logits, item), distinct, **args)
  # Unmasked, row 2's v_T is also row 0's positive: a hard negative raising the loss.
  assert float(unmasked[2]["tt"]) > float(metrics["tt"]) + 1e-3

  half = _batch(rng, valid=(1, 0, 1, 0))
  total, count, metrics = calrec_loss(HandMade(joint, logits, item), half, **args)
  ref = _reference(half, joint, logits, item, 0.1, (0.5, 1.0, 1.0))
  assert float(count) == 2
  np.testing.assert_allclose(float(total), ref["total"], rtol=1e-5)
  # Rows 1 and 3 are neither positives nor negatives: the loss is that of rows 0 and 2 alone.
  alone = {k: v[[0, 2]] for k, v in half.items()}
  ref2 = _reference(alone, joint[[0, 2]], logits[[0, 2]], item[[0, 2]], 0.1, (0.5, 1.0, 1.0))
  np.testing.assert_allclose(float(total), ref2["total"], rtol=1e-5)


def test_pool_layer_argument():
  assert pool_layer_arg("final") is True
  assert pool_layer_arg("-1") == -1 and pool_layer_arg(2) == 2
  with pytest.raises(ValueError, match="config.calrec.pool_layer='top'"):
    pool_layer_arg("top")


# --- Training rows ------------------------------------------------------------------------------


def test_pair_positions_every_prefix_and_window():
  rows, pos = calrec_pairs.pair_positions(np.array([4, 1, 0, 2]), 0)
  assert rows.tolist() == [0, 0, 0, 3] and pos.tolist() == [1, 2, 3, 1]
  rows, pos = calrec_pairs.pair_positions(np.array([4, 1, 0, 2]), 2)
  assert rows.tolist() == [0, 0, 3] and pos.tolist() == [2, 3, 1]


@pytest.fixture(scope="module")
def tiny_pairs():
  data = registry.load_dataset(dict(name="synthetic", num_users=24, num_items=20,
                                    num_clusters=3, seed=1))
  split = splits.leave_one_out(data)
  tok = tokenizer_lib.load_tokenizer("byte")
  catalogue = item_text.ItemCatalogue.build(data, item_text.ItemTextConfig.short(), tok)
  corpus = user_corpus.UserCorpus(data, split, "calrec", targets="all", catalogue=catalogue,
                                  tokenizer=tok, max_tokens=400, max_history_items=3)
  return data, split, tok, calrec_pairs.PairCorpus(corpus, window=0)


def test_pairs_come_from_the_training_prefixes_only(tiny_pairs):
  data, split, _, pairs = tiny_pairs
  assert len(pairs) == int(np.maximum(split.train.lengths - 1, 0).sum())
  for i in range(0, len(pairs), 7):
    doc = pairs[i]
    row, pos = int(pairs.rows[i]), int(pairs.positions[i])
    seq = split.train[row]
    assert doc.meta["user"] == int(split.train_users[row])
    assert doc.meta["target_item"] == int(seq[pos])
    history = [s.item for s in doc.spans if s.role == "history"]
    assert history == seq[:pos][-3:].tolist()


@pytest.mark.parametrize("user_tokens", ["prompt", "history_items", "last"])
def test_rows_and_masks_select_exactly_the_intended_tokens(tiny_pairs, user_tokens):
  _, _, tok, pairs = tiny_pairs
  encode = calrec_pairs.EncodePair(tok, seq_len=400, item_len=64, user_tokens=user_tokens,
                                   id_stride=21)
  for i in (0, 5, len(pairs) - 1):
    doc = pairs[i]
    row = encode.map(doc)
    n = int(row["segment_ids"].sum())
    assert n == len(doc.text.encode()) + 2 and row["valid"] == 1  # bytes + BOS + EOS
    target = doc.meta["target_text"]
    assert tok.decode(row["tokens"][row["target_mask"] > 0]) == target
    # NIG: the target's tokens and EOS.
    assert row["loss_mask"].sum() == row["target_mask"].sum() + 1
    assert row["loss_mask"][n - 1] == 1 and row["tokens"][n - 1] == tok.eos_id
    user = tok.decode(row["tokens"][row["user_mask"] > 0])
    if user_tokens == "prompt":
      assert user == doc.text[:doc.target_start]
    elif user_tokens == "last":  # byte tokens: the prompt's last character
      assert row["user_mask"].sum() == 1 and user == doc.text[doc.target_start - 1]
    else:
      items = [doc.text[s.start:s.end] for s in doc.spans if s.role == "history"]
      assert user == "".join(items)
    assert not (row["user_mask"] & row["target_mask"]).any()
    assert not row["user_mask"][n:].any() and not row["target_mask"][n:].any()
    m = int(row["item_segment_ids"].sum())
    assert row["item_tokens"][0] == tok.bos_id and row["item_mask"][0] == 0
    assert tok.decode(row["item_tokens"][row["item_mask"] > 0]) == target
    assert not row["item_mask"][m:].any()
    # BOS + item_len slots rounded up to 8 (cuDNN attention trains only on even row lengths).
    assert len(row["item_tokens"]) % 8 == 0 and len(row["item_tokens"]) >= m
    assert row["pair_id"] == doc.meta["target_item"]


def test_truncated_next_item_makes_the_pair_invalid(tiny_pairs):
  _, _, tok, pairs = tiny_pairs
  doc = pairs[3]
  short = calrec_pairs.EncodePair(tok, seq_len=doc.target_start - 5, item_len=64).map(doc)
  assert short["valid"] == 0 and short["target_mask"].sum() == 0


def test_template_must_write_the_next_item_alone():
  assert calrec_pairs.check_template("calrec").name == "calrec"
  for bad in ("profile", "p5_seq_1,calrec", "p5_direct_2"):
    with pytest.raises(ValueError, match="config.calrec.template"):
      calrec_pairs.check_template(bad)
