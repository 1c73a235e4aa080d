"""The GLM blank-infilling loss on held-out documents (the `infilling` evaluator).

Each evaluation corpus (`name`, `documents`, like `recjax.text.corpora.EvalCorpus`) is
corrupted by the same GLM transform as training (recjax.text.infilling, a fixed seed: the same
spans at every checkpoint and on every process) and scored on Part B only. Metrics per corpus:
`<name>/infill_loss` (mean nll per Part-B token), `<name>/infill_ppl` = exp(loss),
`<name>/infill_accuracy` (share of Part-B tokens whose argmax is the target) and
`<name>/infill_tokens`.

The model interface: `model(tokens, **objectives.glm.model_kwargs(batch)).logits`.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from recjax.eval.perplexity import PerplexityEvaluator
from recjax.objectives import glm as glm_objective

HostBatches = Callable[[Any, int], Iterable[dict[str, np.ndarray]]]


class InfillingEvaluator(PerplexityEvaluator):
  """Per-corpus infilling loss, perplexity and accuracy; see the module docstring.

  Args:
    corpora: split -> the evaluation corpora of that split.
    host_batches: (documents, rows) -> GLM host batches of at most `rows` rows (tokens,
      segment_ids, targets, loss_mask, prefix_mask, inter_positions, intra_positions), built
      once per corpus and kept.
    batch_size: rows per batch (rounded up to the data-parallel device count).
  """

  name = "infilling"
  num_sums = 3

  def corpus_metrics(self, corpus: Any, sums: np.ndarray) -> dict[str, float]:
    nll, count, correct = sums
    loss = nll / max(count, 1.0)
    return {f"{corpus.name}/infill_loss": loss,
            f"{corpus.name}/infill_ppl": math.exp(min(loss, 700.0)),
            f"{corpus.name}/infill_accuracy": correct / max(count, 1.0),
            f"{corpus.name}/infill_tokens": count}

  @staticmethod
  def batch_sums(graphdef, state, batch, *, mesh) -> jax.Array:
    return _infilling_sums(graphdef, state, batch, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("graphdef", "mesh"))
def _infilling_sums(graphdef, state, batch, *, mesh):
  """[nll sum, Part-B tokens, exact tokens] of one batch, replicated."""
  model = nnx.merge(graphdef, state)
  logits = model(batch["tokens"], **glm_objective.model_kwargs(batch)).logits
  nll, count, metrics = glm_objective.infilling_loss(logits, batch["targets"],
                                                     batch["loss_mask"])
  sums = jnp.stack([nll, count, metrics["accuracy"]])
  return jax.lax.with_sharding_constraint(sums, NamedSharding(mesh, PartitionSpec()))
