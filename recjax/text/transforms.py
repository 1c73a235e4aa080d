"""Per-example transforms between encoding and packing, and the chain each objective uses.

`pipeline.make_text_dataset` runs, for every document (MaxText's `grain_data_processing.py`
likewise picks a preprocessing chain per objective):

    EncodeDocument -> the objective's chain -> TruncateExample(seq_len) -> pack or pad -> batch

Every transform of a chain takes and returns an *encoded example*, a dict of int32 arrays:
  per token, [n]:   tokens, loss_mask, entity_ids, entity_positions, entity_kinds, domain_ids
  per entity, [e]:  entity_spans [e, 2] (token [start, end) in this example), entity_span_kinds,
                    entity_span_items, entity_span_roles (encoding.SPAN_FEATURES)
  with target_len > 0 also target_tokens [t].
Entity k (1-based, `entity_ids == k`) is row k-1 of the per-entity arrays. Transforms see whole
documents, before truncation, so one that reads or moves entity spans (GLM blank infilling:
replace entities by [MASK] and append them as Part B) runs here, and must return the per-token
and per-entity arrays consistent with each other. Truncation and packing keep spans consistent
after the chain (clipped at seq_len; offset to row positions in packed rows, see
`pipeline.PipelineConfig.max_entities`).

A chain is a list of Grain transforms (`grain.transforms.Map`, `RandomMap`, `Filter`); a
`RandomMap` gets a generator seeded by the pipeline seed and the example's position, so the
pipeline stays deterministic and resumable. To add an objective: write its transforms in this
module (or its own: GLM's are in infilling.py), a builder `(tokenizer, pipeline_config) ->
list` of them, and an entry in `CHAINS`; the config key `text.objective` then selects it.
Only the keys above reach a batch (packing and padding lay out `pipeline.SEQUENCE_FEATURES`,
the span arrays and the target); an objective that needs a new per-token feature names it in
its transform's `features` attribute (`added_features`) and the pipeline lays it out like the
others: GLM's `targets`, `prefix_mask`, `inter_positions` and `intra_positions`
(recjax.text.infilling).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from recjax.text import infilling


def causal_lm(tokenizer, config) -> list[Any]:
  """Next-token prediction needs nothing beyond encoding: the loss mask is the document's."""
  del tokenizer, config
  return []


# objective name -> builder of its transform chain.
CHAINS: dict[str, Callable[[Any, Any], list[Any]]] = {
    "causal_lm": causal_lm,
    # GLM blank infilling with RecSysLLM's entity-aware masks and 2D positions
    # (recjax.text.infilling; knobs in `config.text.glm`).
    "glm": infilling.glm_chain,
}


def get_chain(name: str, tokenizer, config) -> list[Any]:
  """The transforms of objective `name` for `tokenizer` and a `pipeline.PipelineConfig`."""
  if name not in CHAINS:
    raise ValueError(f"text.objective={name!r} is unknown; choose from {sorted(CHAINS)}")
  return list(CHAINS[name](tokenizer, config))


def resolve(transforms: str | Sequence[Any] | None, tokenizer, config) -> list[Any]:
  """A chain given by name, as a list of transforms, or None (the config's `objective`)."""
  if transforms is None:
    transforms = config.objective
  if isinstance(transforms, str):
    return get_chain(transforms, tokenizer, config)
  return list(transforms)


def added_features(chain: Sequence[Any]) -> tuple[str, ...]:
  """The per-token features the transforms of `chain` add (their `features` attribute)."""
  out: list[str] = []
  for t in chain:
    out += [f for f in getattr(t, "features", ()) if f not in out]
  return tuple(out)
