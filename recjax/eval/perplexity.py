"""Loss and perplexity of a causal LM per evaluation corpus (the `perplexity` evaluator).

For each corpus (an object with `name`, `documents` and `has_answer`, such as
`recjax.text.corpora.EvalCorpus`) it reports `<name>/loss` (mean next-token loss over every
counted token), `<name>/ppl` = exp(loss), `<name>/tokens`, and for corpora whose documents end
in a template answer `<name>/target_loss` and `<name>/target_ppl` over the answer's tokens only.
Every process evaluates every document, so the metrics are identical on all of them.

The model interface: `model(tokens, positions=..., segment_ids=...).logits` (recjax's LLM).
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
from recjax.objectives import lm as lm_objective

HostBatches = Callable[[Any, int], Iterable[dict[str, np.ndarray]]]


class PerplexityEvaluator:
  """Per-corpus loss and perplexity; see the module docstring.

  Args:
    corpora: split -> the evaluation corpora of that split.
    host_batches: (documents, rows) -> packed host batches of at most `rows` rows (tokens,
      segment_ids, positions, loss_mask); built once per corpus and kept.
    batch_size: rows per batch (rounded up to the data-parallel device count).
  """

  name = "perplexity"
  num_sums = 4  # what `batch_sums` returns per batch

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
      sums = np.zeros(self.num_sums, np.float64)
      for batch, _ in batching.device_batches(self._cache[key], rows, mesh):
        sums += np.asarray(self.batch_sums(graphdef, state, batch, mesh=mesh), np.float64)
      out.update(self.corpus_metrics(corpus, sums))
    return out

  def corpus_metrics(self, corpus: Any, sums: np.ndarray) -> dict[str, float]:
    """The metrics of one corpus from its summed `batch_sums`."""
    nll, count, target_nll, target_count = sums
    loss = nll / max(count, 1.0)
    out = {f"{corpus.name}/loss": loss, f"{corpus.name}/ppl": math.exp(min(loss, 700.0)),
           f"{corpus.name}/tokens": count}
    if corpus.has_answer and target_count:
      target_loss = target_nll / target_count
      out[f"{corpus.name}/target_loss"] = target_loss
      out[f"{corpus.name}/target_ppl"] = math.exp(min(target_loss, 700.0))
    return out

  @staticmethod
  def batch_sums(graphdef, state, batch, *, mesh) -> jax.Array:
    return _eval_sums(graphdef, state, batch, mesh=mesh)


@functools.partial(jax.jit, static_argnames=("graphdef", "mesh"))
def _eval_sums(graphdef, state, batch, *, mesh):
  """[nll sum, token count, answer nll sum, answer token count] of one batch, replicated."""
  model = nnx.merge(graphdef, state)
  logits = model(batch["tokens"], positions=batch["positions"],
                 segment_ids=batch["segment_ids"]).logits
  nll, counts = lm_objective.next_token_nll(logits, batch["tokens"], batch["segment_ids"])
  answer = lm_objective.answer_mask(batch["segment_ids"], batch["loss_mask"])
  sums = jnp.stack([jnp.sum(jnp.where(counts, nll, 0.0)), jnp.sum(counts.astype(jnp.float32)),
                    jnp.sum(jnp.where(answer, nll, 0.0)), jnp.sum(answer.astype(jnp.float32))])
  return jax.lax.with_sharding_constraint(sums, NamedSharding(mesh, PartitionSpec()))
