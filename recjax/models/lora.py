"""LoRA adapters for `recjax.models.llm.LLM`.

`add_lora` attaches low-rank adapters (A: in x r, B: r x out, B = 0 at start)
to chosen projections of an existing model, e.g. one just imported from a HF
checkpoint. Adapter weights are `LoRAParam`s, so

    optimizer = nnx.Optimizer(model, optax.adamw(1e-4), wrt=LoRAParam)
    grads = nnx.grad(loss_fn, argnums=nnx.DiffState(0, LoRAParam))(model, ...)

train only them (the base stays frozen and has no optimizer state).
`merge_lora` folds them into the base weights for export.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from recjax.models import llm
from recjax.models.layers import Linear

TARGETS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj',
           'down_proj')


class LoRAParam(nnx.Param):
  """A LoRA adapter weight (a subclass of `nnx.Param`)."""


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
  """Which projections get adapters, and their size.

  Attributes:
    rank: Rank r of each adapter (8-64 typical).
    alpha: Scaling numerator: the adapter output is (alpha / rank) * x A B.
    targets: Projection names among q_proj, k_proj, v_proj, o_proj,
      gate_proj, up_proj, down_proj.
  """
  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = ('q_proj', 'k_proj', 'v_proj', 'o_proj')

  def __post_init__(self):
    object.__setattr__(self, 'targets', tuple(self.targets))
    unknown = set(self.targets) - set(TARGETS)
    if unknown:
      raise ValueError(f'Unknown LoRA targets {sorted(unknown)}; use {TARGETS}')


def _targets(model: llm.LLM,
             names: Sequence[str]) -> list[tuple[tuple, Linear]]:
  return [(path, m) for path, m in nnx.iter_modules(model)
          if isinstance(m, Linear) and path and path[-1] in names]


def _num_stacked(linear: Linear) -> int | None:
  """Number of scanned layers stacked in `linear`, or None."""
  extra = linear.kernel.ndim - len(linear.in_shape) - len(linear.out_shape)
  return linear.kernel.shape[0] if extra == 1 else None


def add_lora(model: llm.LLM, config: LoRAConfig, *, rngs: nnx.Rngs) -> llm.LLM:
  """Adds adapters to `model` in place and returns it.

  A is drawn from N(0, 1/fan_in) and B is zero, so the model's outputs are
  unchanged until training moves B. Adapters are stored in `param_dtype`
  with logical axes (layers,) + in axes + (None,) and (layers, None) + out
  axes.
  """
  dtype = jnp.dtype(model.cfg.param_dtype)
  found = _targets(model, config.targets)
  if not found:
    raise ValueError(f'No projections named {config.targets} in the model')
  for _, linear in found:
    if linear.lora_a is not None:
      raise ValueError('The model already has LoRA adapters')
    layers = _num_stacked(linear)
    lead = () if layers is None else (layers,)
    lead_axes = () if layers is None else ('layers',)
    fan_in = math.prod(linear.in_shape)
    init_a = nnx.with_partitioning(
        nnx.initializers.normal(1.0 / math.sqrt(fan_in)),
        lead_axes + linear.in_axes + (None,), eager_sharding=False)
    init_b = nnx.with_partitioning(
        nnx.initializers.zeros, lead_axes + (None,) + linear.out_axes,
        eager_sharding=False)
    linear.lora_a = LoRAParam(init_a(
        rngs.params(), lead + linear.in_shape + (config.rank,), dtype))
    linear.lora_b = LoRAParam(init_b(
        rngs.params(), lead + (config.rank,) + linear.out_shape, dtype))
    linear.lora_scale = config.alpha / config.rank
  return model


def merge_lora(model: llm.LLM) -> llm.LLM:
  """Folds every adapter into its base kernel (W += scale * A B) in place,
  removes the adapters and returns the model."""
  for _, linear in _targets(model, TARGETS):
    if linear.lora_a is None:
      continue
    a = linear.lora_a[...].astype(jnp.float32)
    b = linear.lora_b[...].astype(jnp.float32)
    delta = lambda a, b: jnp.tensordot(a, b, axes=1)
    if _num_stacked(linear) is not None:
      delta = jax.vmap(delta)
    kernel = linear.kernel[...]
    merged = kernel.astype(jnp.float32) + linear.lora_scale * delta(a, b)
    linear.kernel.set_value(merged.astype(kernel.dtype))
    linear.lora_a = nnx.data(None)
    linear.lora_b = nnx.data(None)
    linear.lora_scale = 1.0
  return model


def lora_state(model: llm.LLM) -> nnx.State:
  """The adapter weights of `model` (e.g. to checkpoint only them)."""
  return nnx.state(model, LoRAParam)
