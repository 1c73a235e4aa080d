"""Decoder-only LLM backbone: Llama, Gemma 1/2/3 and Qwen2/3 families in Flax NNX.

One `LLM` module covers the families through `LLMConfig` switches (norm style,
activation, QK-norm, biases, soft-capping, local/global attention, RoPE
scaling). Architecture presets live in `gin/*.gin` and are loaded with
`get_preset(name)`. The config and presets are in `llm_config.py`, the layers in
`layers.py`; this module holds the model, its KV cache and its output.

Parameters carry logical axis names (`vocab`, `embed`, `mlp`, `heads`,
`kv_heads`, `head_dim`, `layers`) for the trainer's logical-axis rules. Variables
are created without eager sharding; the trainer places them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import flax
from flax import nnx
import jax
import jax.numpy as jnp

from recjax.models.layers import (Block, RMSNorm, constrain_batch, make_param, rope_inv_freq,
                                  rope_tables)
from recjax.models.llm_config import REMAT_POLICIES, LLMConfig
# Re-exported: callers (tasks, tests, benchmarks) reach the config, presets and layers as `llm.X`.
from recjax.models.layers import Attention, Linear, MLP  # pylint: disable=unused-import
from recjax.models.llm_config import GIN_DIR, get_preset  # pylint: disable=unused-import

_rope_tables = rope_tables  # its old private name, used by benchmarks/lm_cpu_breakdown.py

Array = jax.Array


# ------------------------------------------------------------------------------
# KV cache and outputs.
# ------------------------------------------------------------------------------


@flax.struct.dataclass
class KVCache:
  """Fixed-size key/value cache of all layers.

  Slots are written left to right; `index` is the next free slot and is shared
  by all rows (prompts of different lengths are left-padded).

  Attributes:
    k: keys: one (layers, batch, max_len, kv_heads, head_dim) array when the
      model scans its layers (`scan_layers`), else a tuple of one (batch,
      max_len, kv_heads, head_dim) array per layer, so that a decoding step
      writes each layer's slot in place instead of re-stacking the whole cache
      (on XLA:CPU that copy dominated the step).
    v: values, laid out as `k`.
    segment_ids: (batch, max_len) int32 segment of each written slot; 0 marks
      empty slots and padding, which no real token attends to.
    prefix: (batch, max_len) bool, slots every later token of the segment may
      see bidirectionally (prefix-LM attention).
    index: () int32, next slot to write.
  """
  k: Array | tuple[Array, ...]
  v: Array | tuple[Array, ...]
  segment_ids: Array
  prefix: Array
  index: Array

  @classmethod
  def create(cls, cfg: LLMConfig, batch_size: int, max_len: int,
             dtype=None) -> 'KVCache':
    """An empty cache; `dtype` defaults to the model's compute dtype."""
    shape = (batch_size, max_len, cfg.num_kv_heads, cfg.head_dim)
    dtype = jnp.dtype(dtype or cfg.dtype)
    if cfg.scan_layers:
      k = v = jnp.zeros((cfg.num_layers, *shape), dtype)
    else:
      k = v = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    return cls(k=k, v=v,
               segment_ids=jnp.zeros((batch_size, max_len), jnp.int32),
               prefix=jnp.zeros((batch_size, max_len), bool),
               index=jnp.zeros((), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.segment_ids.shape[1]

  def gather(self, rows: Array) -> 'KVCache':
    """Cache whose row i is row `rows[i]` of this one (beam reordering)."""
    if isinstance(self.k, tuple):
      k, v = tuple(x[rows] for x in self.k), tuple(x[rows] for x in self.v)
    else:
      k, v = self.k[:, rows], self.v[:, rows]
    return self.replace(k=k, v=v, segment_ids=self.segment_ids[rows],
                        prefix=self.prefix[rows])


@flax.struct.dataclass
class LLMOutput:
  """What `LLM.__call__` returns.

  Attributes:
    logits: (batch, length, vocab) float32 next-token logits, or None when
      `compute_logits=False`.
    hidden: requested hidden states (batch, length, hidden_size), or None.
    cache: updated KV cache when one was passed in, else None.
  """
  logits: Array | None
  hidden: Array | None = None
  cache: KVCache | None = None


# ------------------------------------------------------------------------------
# Model.
# ------------------------------------------------------------------------------


class _Masks(NamedTuple):
  """Attention masks over (query slot, key slot), shared by every layer of one call."""
  causal: Array  # (t, s) bool: key slot <= query slot.
  global_: Array | None  # (b, 1, t, s) bool; None: plain causal (the is_causal fast path).
  local: Array | None  # (b, 1, t, s) bool: global_ within the sliding window; None: no local layers.


class LLM(nnx.Module):
  """Decoder-only transformer language model."""

  def __init__(self, cfg: LLMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    init = nnx.initializers.normal(cfg.initializer_range)
    self.embedding = make_param(rngs, init, (cfg.vocab_size, cfg.hidden_size),
                                ('vocab', 'embed'), cfg.param_dtype)
    self.extra_position_embedding = (
        make_param(rngs, init, (cfg.num_extra_positions, cfg.hidden_size),
                   (None, 'embed'), cfg.param_dtype)
        if cfg.num_extra_positions else None)
    if cfg.scan_layers:
      @nnx.split_rngs(splits=cfg.num_layers)
      @nnx.vmap(in_axes=(0,), out_axes=0,
                transform_metadata={nnx.PARTITION_NAME: 'layers'})
      def make_layers(rngs):
        return Block(cfg, rngs=rngs)
      self.layers = make_layers(rngs)
    else:
      self.layers = nnx.List([Block(cfg, rngs=rngs)
                              for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.hidden_size, 'embed', eps=cfg.norm_eps,
                              plus_one=cfg.norm_plus_one, dtype=cfg.dtype,
                              param_dtype=cfg.param_dtype, rngs=rngs)
    self.lm_head = (None if cfg.tie_embeddings else
                    make_param(rngs, init, (cfg.hidden_size, cfg.vocab_size),
                               ('embed', 'vocab'), cfg.param_dtype))

  def __call__(self,
               tokens: Array,
               positions: Array | None = None,
               segment_ids: Array | None = None,
               attention_mask_kind: str = 'causal',
               prefix_lengths: Array | None = None,
               prefix_mask: Array | None = None,
               extra_positions: Array | None = None,
               return_hidden: bool | int = False,
               cache: KVCache | None = None,
               compute_logits: bool = True) -> LLMOutput:
    """Runs the model.

    Args:
      tokens: (batch, length) int token ids.
      positions: (batch, length) RoPE position ids. Default: 0..length-1, or
        continuing from `cache.index` when a cache is given. Pass them for
        packed sequences (restarting per segment), left-padded decoding and
        GLM inter-entity positions.
      segment_ids: (batch, length) int ids; tokens attend only within their
        segment. 0 marks padding. Default: all ones.
      attention_mask_kind: 'causal', or 'prefix' for prefix-LM attention where
        the first `prefix_lengths[b]` slots of row b are visible to every
        token of their segment (bidirectional within the prefix).
      prefix_lengths: (batch,) int prefix length per row, counted in slots
        (cache slots when a cache is used). 'prefix' needs this or
        `prefix_mask`.
      prefix_mask: (batch, length) bool, instead of `prefix_lengths`: the
        tokens every token of their segment may see. With `segment_ids` this
        gives each example of a packed row its own prefix (GLM Part A).
      extra_positions: (batch, length) ids into the second learned position
        table (config `num_extra_positions` > 0); None adds nothing.
      return_hidden: False; True for the final-normed hidden states (the
        inputs of the output projection); or an int layer index for the
        output of that block (negative counts from the end).
      cache: a `KVCache`; the tokens are written at `cache.index` onwards and
        attend to everything cached before them.
      compute_logits: set False to skip the output projection.

    Returns:
      An `LLMOutput`.
    """
    if attention_mask_kind not in ('causal', 'prefix'):
      raise ValueError(f'Unknown attention_mask_kind {attention_mask_kind!r}')
    if attention_mask_kind == 'prefix' and (prefix_lengths is None) == (prefix_mask is None):
      raise ValueError("attention_mask_kind='prefix' needs one of prefix_lengths and "
                       "prefix_mask")
    b, t = tokens.shape
    start = cache.index if cache is not None else 0
    q_slot = start + jnp.arange(t, dtype=jnp.int32)
    if positions is None:
      positions = jnp.broadcast_to(q_slot[None], (b, t))

    x = constrain_batch(self._embed(tokens, extra_positions))
    masks, cache = self._masks(q_slot, b, segment_ids, attention_mask_kind, prefix_lengths,
                               prefix_mask, cache)
    ropes = self._rope(positions)
    target = None  # the block whose output is returned as `hidden`
    if return_hidden is not True and return_hidden is not False:
      target = int(return_hidden) % self.cfg.num_layers
    x, selected, cache = self._run_layers(x, ropes, masks, cache, target)

    x = self.final_norm(x)
    hidden = selected if target is not None else (x if return_hidden else None)
    logits = self.logits(x) if compute_logits else None
    if cache is not None:
      cache = cache.replace(index=cache.index + t)
    return LLMOutput(logits=logits, hidden=hidden, cache=cache)

  def _embed(self, tokens: Array, extra_positions: Array | None) -> Array:
    """Token embeddings (scaled for Gemma) plus the learned extra-position embeddings."""
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    x = jnp.take(self.embedding[...], tokens, axis=0).astype(dtype)
    if cfg.scale_embeddings:
      x = x * jnp.asarray(math.sqrt(cfg.hidden_size), dtype)
    if self.extra_position_embedding is not None and extra_positions is not None:
      x = x + jnp.take(self.extra_position_embedding[...], extra_positions,
                       axis=0).astype(dtype)
    return x

  def _masks(self, q_slot: Array, b: int, segment_ids: Array | None, kind: str,
             prefix_lengths: Array | None, prefix_mask: Array | None,
             cache: KVCache | None) -> tuple[_Masks, KVCache | None]:
    """The masks of queries at `q_slot`; the queries' segments and prefix flags go into `cache`.

    A query sees a key of its own segment that is not after it or is in the prefix; local
    layers also need the key fewer than `sliding_window` slots behind.
    """
    cfg = self.cfg
    t = q_slot.shape[0]
    plain_causal = cache is None and segment_ids is None and kind == 'causal'
    q_seg = (jnp.ones((b, t), jnp.int32) if segment_ids is None
             else segment_ids.astype(jnp.int32))
    if kind != 'prefix':
      q_prefix = jnp.zeros((b, t), bool)
    elif prefix_mask is not None:
      q_prefix = prefix_mask.astype(bool)
    else:
      q_prefix = q_slot[None, :] < prefix_lengths[:, None]
    if cache is None:
      k_slot, k_seg, k_prefix = q_slot, q_seg, q_prefix
    else:
      start = cache.index
      k_slot = jnp.arange(cache.max_len, dtype=jnp.int32)
      k_seg = jax.lax.dynamic_update_slice(cache.segment_ids, q_seg, (0, start))
      k_prefix = jax.lax.dynamic_update_slice(cache.prefix, q_prefix, (0, start))
      cache = cache.replace(segment_ids=k_seg, prefix=k_prefix)
    causal = k_slot[None, :] <= q_slot[:, None]
    if plain_causal:
      mask_global = None
    else:
      mask_global = ((q_seg[:, :, None] == k_seg[:, None, :]) &
                     (causal[None] | k_prefix[:, None, :]))[:, None]
    mask_local = None
    if any(cfg.local_layers):
      window = (q_slot[:, None] - k_slot[None, :]) < cfg.sliding_window
      base = causal[None] if mask_global is None else mask_global[:, 0]
      mask_local = (base & window)[:, None]
    return _Masks(causal, mask_global, mask_local), cache

  def _rope(self, positions: Array) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """(sin, cos) tables of global and of local layers (which may have their own base)."""
    cfg = self.cfg
    rope_global = rope_tables(positions, rope_inv_freq(
        cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, cfg.rope_scaling_factor,
        cfg.rope_low_freq_factor, cfg.rope_high_freq_factor,
        cfg.rope_original_max_position, cfg.rope_beta_fast, cfg.rope_beta_slow,
        cfg.rope_truncate), cfg.rope_attention_scale)
    rope_local = rope_global
    if any(cfg.local_layers) and cfg.rope_local_theta is not None:
      rope_local = rope_tables(positions, rope_inv_freq(cfg.head_dim, cfg.rope_local_theta))
    return rope_global, rope_local

  def _run_layers(self, x: Array, ropes, masks: _Masks, cache: KVCache | None,
                  target: int | None) -> tuple[Array, Array | None, KVCache | None]:
    """Runs the blocks: (output, output of block `target` or None, updated cache)."""
    rope_global, rope_local = ropes
    cache_index = None if cache is None else cache.index

    def run_block(block, x, selected, is_local, layer_idx, kv):
      (sin, cos), mask = rope_global, masks.global_
      if is_local is True:
        (sin, cos), mask = rope_local, masks.local
      elif is_local is not False:  # Traced per-layer flag inside the scan.
        sin = jnp.where(is_local, rope_local[0], rope_global[0])
        cos = jnp.where(is_local, rope_local[1], rope_global[1])
        if masks.global_ is None:
          mask = jnp.where(is_local, masks.local, masks.causal[None, None])
        else:
          mask = jnp.where(is_local, masks.local, masks.global_)
      x, kv = block(x, sin, cos, mask, mask is None, kv, cache_index)
      x = constrain_batch(x)
      if target is not None:
        selected = jnp.where(layer_idx == target, x, selected)
      return x, selected, kv

    selected = jnp.zeros_like(x) if target is not None else None
    run = self._scan_layers if self.cfg.scan_layers else self._loop_layers
    return run(run_block, x, selected, cache)

  def _remat_policy(self) -> tuple[bool, Any]:
    return self.cfg.remat_policy != 'none', REMAT_POLICIES.get(self.cfg.remat_policy)

  def _scan_layers(self, run_block: Callable, x: Array, selected: Array | None,
                   cache: KVCache | None):
    """The stacked blocks under `jax.lax.scan` (one traced body for all layers)."""
    local_flags = self.cfg.local_layers
    all_same = len(set(local_flags)) == 1
    graphdef, state = nnx.split(self.layers)

    def body(carry, xs):
      x, selected = carry
      layer_state, layer_idx, is_local, kv = xs
      if all_same:
        is_local = local_flags[0]
      x, selected, kv = run_block(nnx.merge(graphdef, layer_state), x,
                                  selected, is_local, layer_idx, kv)
      return (x, selected), kv

    remat, policy = self._remat_policy()
    if remat:
      body = jax.checkpoint(body, policy=policy, prevent_cse=False)
    kv_in = None
    if cache is not None:  # a cache made for the unrolled layers is stacked for the scan
      kv_in = tuple(jnp.stack(x) if isinstance(x, tuple) else x for x in (cache.k, cache.v))
    xs = (state, jnp.arange(self.cfg.num_layers), jnp.asarray(local_flags), kv_in)
    (x, selected), kv_out = jax.lax.scan(body, (x, selected), xs)
    if cache is not None:
      cache = cache.replace(k=kv_out[0], v=kv_out[1])
    return x, selected, cache

  def _loop_layers(self, run_block: Callable, x: Array, selected: Array | None,
                   cache: KVCache | None):
    """The blocks as a Python loop (one traced copy per layer)."""
    local_flags = self.cfg.local_layers
    remat, policy = self._remat_policy()
    new_k, new_v = [], []
    for i, block in enumerate(self.layers):
      kv = None if cache is None else (cache.k[i], cache.v[i])
      if remat:
        graphdef, state = nnx.split(block)

        def fn(state, x, selected, kv, graphdef=graphdef, i=i):
          return run_block(nnx.merge(graphdef, state), x, selected,
                           local_flags[i], i, kv)
        x, selected, kv = jax.checkpoint(fn, policy=policy)(state, x, selected, kv)
      else:
        x, selected, kv = run_block(block, x, selected, local_flags[i], i, kv)
      if cache is not None:
        new_k.append(kv[0])
        new_v.append(kv[1])
    if cache is not None:
      if isinstance(cache.k, tuple):
        cache = cache.replace(k=tuple(new_k), v=tuple(new_v))
      else:
        cache = cache.replace(k=jnp.stack(new_k), v=jnp.stack(new_v))
    return x, selected, cache

  def logits(self, hidden: Array) -> Array:
    """float32 output logits of final-normed hidden states (..., hidden_size)."""
    dtype = jnp.dtype(self.cfg.dtype)
    h = hidden.astype(dtype)
    if self.lm_head is None:
      out = jnp.einsum('...d,vd->...v', h, self.embedding[...].astype(dtype),
                       preferred_element_type=jnp.float32)
    else:
      out = jnp.einsum('...d,dv->...v', h, self.lm_head[...].astype(dtype),
                       preferred_element_type=jnp.float32)
    cap = self.cfg.final_logit_softcap
    if cap is not None:
      out = jnp.tanh(out / cap) * cap
    return out


def create_model(cfg: LLMConfig | str, seed: int = 0, **overrides: Any) -> LLM:
  """A randomly initialised `LLM` from a config or a preset name."""
  if isinstance(cfg, str):
    cfg = get_preset(cfg, **overrides)
  elif overrides:
    cfg = dataclasses.replace(cfg, **overrides)
  return LLM(cfg, rngs=nnx.Rngs(seed))
