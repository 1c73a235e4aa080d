"""Ranking metrics over generated item texts (the SeqIO tasks' default metric function)."""
import numpy as np
import pytest

from recjax.eval import metrics


def test_generated_ranking_metrics():
  targets = ["Toy Story (1995)", "Heat", "Casino"]
  predictions = [["toy  story (1995)", "Heat"], ["Casino", "Fargo", "heat"], "Jaws"]
  np.testing.assert_array_equal(metrics.generated_item_ranks(targets, predictions)[:2], [0, 2])
  assert metrics.generated_item_ranks(targets, predictions)[2] >= 100  # not generated: a miss
  out = metrics.generated_ranking_metric_fn(ks=(1, 3))(targets, predictions)
  assert out["hr@1"] == pytest.approx(1 / 3)
  assert out["hr@3"] == pytest.approx(2 / 3)
  assert out["ndcg@3"] == pytest.approx((1 + 1 / np.log2(4)) / 3)
  assert out["mrr@3"] == pytest.approx((1 + 1 / 3) / 3)
