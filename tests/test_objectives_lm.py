"""recjax.objectives.lm (next-token loss over packed rows) against a numpy reference."""
import numpy as np
import pytest

from recjax.objectives import lm

RNG = np.random.default_rng(0)
# Row 0 packs two documents and padding; row 1 is one document filling the row.
SEGMENTS = np.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
TOKENS = RNG.integers(1, 7, size=SEGMENTS.shape)
LOSS_MASK = np.array([[0, 1, 1, 0, 1, 0], [0, 0, 0, 1, 1, 1]])  # answer tokens
LOGITS = RNG.normal(size=SEGMENTS.shape + (7,)).astype(np.float32)


def _reference(answer_only: bool):
  """Per-pair (t predicts t + 1) loss over pairs inside one document."""
  total, count = 0.0, 0
  for b in range(SEGMENTS.shape[0]):
    for t in range(SEGMENTS.shape[1] - 1):
      if SEGMENTS[b, t + 1] == 0 or SEGMENTS[b, t + 1] != SEGMENTS[b, t]:
        continue
      if answer_only and not LOSS_MASK[b, t + 1]:
        continue
      row = LOGITS[b, t].astype(np.float64)
      total += np.log(np.sum(np.exp(row))) - row[TOKENS[b, t + 1]]
      count += 1
  return total, count


def test_next_token_nll_counts_only_pairs_inside_a_document():
  nll, counts = lm.next_token_nll(LOGITS, TOKENS, SEGMENTS)
  np.testing.assert_array_equal(counts, [[1, 1, 0, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
  np.testing.assert_array_equal(lm.answer_mask(SEGMENTS, LOSS_MASK),
                                [[1, 1, 0, 1, 0, 0], [0, 0, 1, 1, 1, 0]])
  b, t = 1, 2
  row = LOGITS[b, t].astype(np.float64)
  assert float(nll[b, t]) == pytest.approx(np.log(np.exp(row).sum()) - row[TOKENS[b, t + 1]],
                                           rel=1e-5)


@pytest.mark.parametrize("loss_on", ["all", "target"])
def test_causal_lm_loss_matches_numpy(loss_on):
  batch = {"tokens": TOKENS, "segment_ids": SEGMENTS, "loss_mask": LOSS_MASK}
  loss, weight, metrics = lm.causal_lm_loss(LOGITS, batch, loss_on)
  want, count = _reference(loss_on == "target")
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert float(weight) == count and metrics == {}


def test_unknown_loss_on_is_named():
  with pytest.raises(ValueError, match="loss_on='answer' is unknown"):
    lm.causal_lm_loss(LOGITS, {"tokens": TOKENS, "segment_ids": SEGMENTS}, "answer")


def test_target_token_loss_is_unshifted_and_masked():
  targets = RNG.integers(0, 7, size=SEGMENTS.shape)
  total, count, metrics = lm.target_token_loss(LOGITS, targets, LOSS_MASK)
  rows = LOGITS.astype(np.float64)
  nll = np.log(np.exp(rows).sum(-1)) - np.take_along_axis(rows, targets[..., None], -1)[..., 0]
  assert metrics == {} and float(count) == LOSS_MASK.sum()
  np.testing.assert_allclose(float(total), nll[LOSS_MASK > 0].sum(), rtol=1e-5)
