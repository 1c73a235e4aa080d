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
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from recjax.eval import batching
from recjax.objectives import glm as glm_objective

HostBatches = Callable[[Any, int], Iterable[dict[str, np.ndarray]]]


class InfillingEvaluator:
  """Per-corpus infilling loss, perplexity and accuracy; see the module docstring.

  Args:
    corpora: split -> the evaluation corpora of that split.
    host_batches: (documents, rows) -> GLM host batches of at most `rows` rows (tokens,
      segment_ids, targets, loss_mask, prefix_mask, inter_positions, intra_positions), built
      once per corpus and kept.
    batch_size: rows per batch (rounded up to the data-parallel device count).
  """

  name = "infilling"

  def __init__(self, corpora: Callable[[str], Sequence[Any]], host_batches: HostBatches,
               batch_size: int, every_steps: int = 0):
    self.corpora, self.host_batches = corpora, host_batches
    self.batch_size, self.every_steps = int(batch_size), int(every_steps)
    self._cache: dict[tuple[str, str, int], list[dict[str, np.ndarray]]] = {}

  def __call__(self, model: nnx.Module, split: str, mesh: jax.sharding.Mesh) -> dict[str, float]:
    if split not in ("valid", "test"):
      raise ValueError(f"split must be 'valid' or 'test', got '{split}'")
    graphdef, state = nnx.split(model)
    rows = batching.eval_batch_rows(self.batch_size, mesh)
    out = {}
    for corpus in self.corpora(split):
      key = (split, corpus.name, rows)
      if key not in self._cache:
        self._cache[key] = list(self.host_batches(corpus.documents, rows))
      sums = np.zeros(3, np.float64)
      for batch, _ in batching.device_batches(self._cache[key], rows, mesh):
        sums += np.asarray(_infilling_sums(graphdef, state, batch, mesh=mesh), np.float64)
      nll, count, correct = sums
      loss = nll / max(count, 1.0)
      out[f"{corpus.name}/infill_loss"] = loss
      out[f"{corpus.name}/infill_ppl"] = math.exp(min(loss, 700.0))
      out[f"{corpus.name}/infill_accuracy"] = correct / max(count, 1.0)
      out[f"{corpus.name}/infill_tokens"] = count
    return out


@functools.partial(jax.jit, static_argnames=("graphdef", "mesh"))
def _infilling_sums(graphdef, state, batch, *, mesh):
  """[nll sum, Part-B tokens, exact tokens] of one batch, replicated."""
  model = nnx.merge(graphdef, state)
  logits = model(batch["tokens"], **glm_objective.model_kwargs(batch)).logits
  nll, count, metrics = glm_objective.infilling_loss(logits, batch["targets"],
                                                     batch["loss_mask"])
  sums = jnp.stack([nll, count, metrics["accuracy"]])
  return jax.lax.with_sharding_constraint(sums, NamedSharding(mesh, PartitionSpec()))
