"""Evaluators chosen by name (config.eval.evaluators) and the sampled ranking's empty slots."""
import jax
import numpy as np
import pytest
from flax import nnx

from recjax.eval import batching, evaluators, ranking
from recjax.models.sasrec import SASRec, SASRecConfig
from recjax.tasks.lm import LMTask
from recjax.train import sharding as shard_lib
from tests import test_lm
from tests.trainer_utils import tiny_config, tiny_task


def test_parse_spec():
  assert evaluators.parse_spec("ranking") == [("ranking", 0)]
  assert evaluators.parse_spec(" ranking@50, retrieval ,") == [("ranking", 50), ("retrieval", 0)]
  for bad in ("ranking@0", "ranking@x", "@5", "ranking@-2"):
    with pytest.raises(ValueError, match=f"config.eval.evaluators: '{bad}' is not"):
      evaluators.parse_spec(bad)
  with pytest.raises(ValueError, match="'ranking' is listed twice"):
    evaluators.parse_spec("ranking,ranking@5")
  with pytest.raises(ValueError, match="config.eval.evaluators is empty"):
    evaluators.parse_spec(" , ")


def test_tasks_build_the_named_evaluators_with_their_cadence():
  task = tiny_task(tiny_config(**{"eval.evaluators": "ranking@7"}))
  (evaluator,) = task.evaluators
  assert isinstance(evaluator, ranking.RankingEvaluator) and evaluator.every_steps == 7
  assert tiny_task(tiny_config()).evaluators[0].every_steps == 0  # the default: "ranking"
  with pytest.raises(ValueError, match="config.eval.evaluators: unknown evaluator 'ppl'; valid "
                     "names for this task: ranking"):
    tiny_task(tiny_config(**{"eval.evaluators": "ppl"}))
  config = test_lm.tiny_config(**{"eval.evaluators": "perplexity@3"})
  assert [(e.name, e.every_steps) for e in LMTask(config).evaluators] == [("perplexity", 3)]
  with pytest.raises(ValueError, match="unknown evaluator 'ranking'; valid names for this "
                     "task: perplexity"):
    LMTask(test_lm.tiny_config(**{"eval.evaluators": "ranking"}))


def test_sampled_ranking_never_counts_an_empty_negative_slot():
  model = SASRec(SASRecConfig(num_items=10, max_len=8, hidden=8), nnx.Rngs(0))
  model.eval()
  mesh = shard_lib.make_mesh(dict(data=2), jax.devices()[:2])
  items = np.array([[0, 0, 0, 0, 0, 3, 5, 2], [0, 0, 0, 1, 4, 6, 7, 8]], np.int32)
  user = np.asarray(model(items))[:, -1]
  scores = user @ np.asarray(model.item_table()).T  # [2, 11], column 0 = the padding item
  # Row 0's target is its worst item, so the padding item would outrank it if counted.
  targets = np.array([1 + int(np.argmin(scores[0, 1:])), 9], np.int32)
  assert scores[0, 0] > scores[0, targets[0]]
  negatives = np.array([[0, 0, 0, 0], [4, 0, 10, 0]], np.int32)
  host = [{"items": items, "targets": targets, "negatives": negatives}]
  graphdef, state = nnx.split(model)
  ((batch, n),) = list(batching.device_batches(host, 2, mesh))
  eval_ranks = ranking._eval_ranks  # pylint: disable=protected-access
  full, sampled = eval_ranks(graphdef, state, batch, mesh=mesh)
  for row in range(n):
    real = negatives[row][negatives[row] > 0]
    want = int(np.sum(scores[row, real] >= scores[row, targets[row]]))
    assert int(sampled[row]) == want
    masked = scores[row].copy()
    masked[0] = -np.inf
    assert int(full[row]) == int(np.sum(masked > masked[targets[row]]))
  assert int(sampled[0]) == 0
