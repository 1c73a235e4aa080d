"""The layers of the decoder-only LLM: projections, RMSNorm, RoPE, attention, MLP, block.

Every parameter carries logical axis names (`vocab`, `embed`, `mlp`, `heads`, `kv_heads`,
`head_dim`) as sharding metadata; the trainer maps them to mesh axes. The residual stream is
pinned to the batch's sharding (`constrain_batch`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from recjax.models.llm_config import ACTIVATIONS, LLMConfig

Array = jax.Array


# The mesh axes a batch is split over: recjax/train/sharding.py's BATCH_AXES (the model does not
# import the trainer; tests/test_llm_model.py checks the two agree).
BATCH_AXES = ('data', 'fsdp')


def constrain_batch(x: Array) -> Array:
  """Pins x's leading (batch) dimension to the batch mesh axes, its other dimensions whole.

  Inside a mesh context (`jax.set_mesh`). Without it, with fsdp-sharded weights XLA's sharding
  propagation follows the weights and gathers activations at the global batch, so activation
  memory per chip does not shrink with the fsdp axis (docs/scaling.md, "What the compiled HLO
  shows"). A no-op outside a mesh, when the batch axes have size 1, or when the batch does not
  divide over them (small decoding batches).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
  if not axes or x.shape[0] % math.prod(mesh.shape[a] for a in axes):
    return x
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(axes))


def make_param(rngs: nnx.Rngs, init, shape: Sequence[int], names: Sequence[Any],
               dtype) -> nnx.Param:
  """A parameter initialised by `init`, with logical axis `names` as sharding metadata."""
  init = nnx.with_partitioning(init, tuple(names), eager_sharding=False)
  return nnx.Param(init(rngs.params(), tuple(shape), jnp.dtype(dtype)))


def _contract(x: Array, w: Array, n: int) -> Array:
  """Contracts the trailing `n` axes of x with the leading `n` axes of w.

  As one 2-D (rows x features) matmul: XLA:CPU otherwise transposes activations for the weight
  gradient of a multi-axis dot_general, which cost ~25% of a training step
  (benchmarks/lm_cpu.py --flatten_matmuls measured +24-30% tokens/s).
  """
  k = math.prod(x.shape[x.ndim - n:])
  y = jnp.dot(x.reshape(-1, k), w.reshape(k, -1))
  return y.reshape(x.shape[:x.ndim - n] + w.shape[n:])


class Linear(nnx.Module):
  """A projection with multi-axis input/output shapes and an optional LoRA adapter.

  The kernel has shape in_shape + out_shape (e.g. q_proj: (embed, heads,
  head_dim)). `recjax.models.lora.add_lora` fills `lora_a` (in_shape + (r,))
  and `lora_b` ((r,) + out_shape); the output then gains
  lora_scale * (x A) B.
  """

  def __init__(self, in_shape: Sequence[int], out_shape: Sequence[int],
               in_axes: Sequence[str | None], out_axes: Sequence[str | None], *,
               use_bias: bool, dtype, param_dtype, init_std: float,
               rngs: nnx.Rngs):
    self.in_shape = tuple(in_shape)
    self.out_shape = tuple(out_shape)
    self.in_axes = tuple(in_axes)
    self.out_axes = tuple(out_axes)
    self.dtype = jnp.dtype(dtype)
    self.kernel = make_param(rngs, nnx.initializers.normal(init_std),
                         self.in_shape + self.out_shape,
                         self.in_axes + self.out_axes, param_dtype)
    self.bias = (make_param(rngs, nnx.initializers.zeros, self.out_shape,
                        self.out_axes, param_dtype) if use_bias else None)
    self.lora_a = nnx.data(None)
    self.lora_b = nnx.data(None)
    self.lora_scale = 1.0

  def __call__(self, x: Array) -> Array:
    n = len(self.in_shape)
    x = x.astype(self.dtype)
    y = _contract(x, self.kernel[...].astype(self.dtype), n)
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    if self.lora_a is not None:
      z = _contract(x, self.lora_a[...].astype(self.dtype), n)
      y = y + self.lora_scale * _contract(z, self.lora_b[...].astype(self.dtype), 1)
    return y


class RMSNorm(nnx.Module):
  """RMSNorm over the last axis; (1 + w) scaling when `plus_one` (Gemma)."""

  def __init__(self, dim: int, axis_name: str | None, *, eps: float,
               plus_one: bool, dtype, param_dtype, rngs: nnx.Rngs):
    init = nnx.initializers.zeros if plus_one else nnx.initializers.ones
    self.scale = make_param(rngs, init, (dim,), (axis_name,), param_dtype)
    self.eps = eps
    self.plus_one = plus_one
    self.dtype = jnp.dtype(dtype)

  def __call__(self, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    w = self.scale[...].astype(jnp.float32)
    return (y * (1.0 + w if self.plus_one else w)).astype(self.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: str = 'default',
                  factor: float = 1.0, low_freq_factor: float = 1.0,
                  high_freq_factor: float = 4.0,
                  original_max_position: int = 8192, beta_fast: float = 32.0,
                  beta_slow: float = 1.0, truncate: bool = True) -> np.ndarray:
  """RoPE inverse frequencies (head_dim // 2,), float32, as in HF transformers.

  Arguments after `scaling` are the `LLMConfig.rope_*` fields of that scaling.
  """
  exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim
  pos_freqs = np.float32(theta) ** exponent
  inv_freq = (1.0 / pos_freqs).astype(np.float32)
  if scaling == 'linear':
    inv_freq = inv_freq / np.float32(factor)
  elif scaling == 'llama3':
    low_wavelen = original_max_position / low_freq_factor
    high_wavelen = original_max_position / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_max_position / wavelen - low_freq_factor) / (
        high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    inv_freq = np.where(medium, smoothed, scaled)
  elif scaling == 'yarn':
    def correction_dim(rotations):  # Dim turning `rotations` times in the context.
      return (head_dim * math.log(original_max_position / (rotations * 2 * math.pi))
              / (2 * math.log(theta)))
    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if truncate:
      low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
      high += 0.001
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - np.float32(low))
                   / np.float32(high - low), 0, 1)
    extrapolate = np.float32(1) - ramp
    interpolated = np.float32(1) / (np.float32(factor) * pos_freqs)
    inv_freq = interpolated * (1 - extrapolate) + inv_freq * extrapolate
  elif scaling != 'default':
    raise ValueError(f'Unknown rope scaling {scaling!r}')
  return inv_freq.astype(np.float32)


def rope_tables(positions: Array, inv_freq: np.ndarray,
                scale: float = 1.0) -> tuple[Array, Array]:
  """(sin, cos) tables (..., head_dim // 2) of `positions`, both multiplied by `scale`."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
  return jnp.sin(freqs) * scale, jnp.cos(freqs) * scale


def apply_rope(x: Array, sin: Array, cos: Array) -> Array:
  """Rotates x (B, T, N, H) by (B, T, H/2) tables, HF 'rotate_half' layout."""
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  sin, cos = sin[:, :, None, :], cos[:, :, None, :]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def _softcap_attention(q: Array, k: Array, v: Array, mask: Array | None, *,
                       scale: float, softcap: float | None,
                       is_causal: bool) -> Array:
  """Grouped-query attention in plain XLA with optional logit soft-capping."""
  b, t, n, h = q.shape
  s, kv = k.shape[1], k.shape[2]
  qg = q.reshape(b, t, kv, n // kv, h)
  logits = jnp.einsum('btkgh,bskh->bkgts', qg, k,
                      preferred_element_type=jnp.float32) * scale
  if softcap is not None:
    logits = jnp.tanh(logits / softcap) * softcap
  if is_causal:
    mask = jnp.tril(jnp.ones((t, s), dtype=bool))[None, None]
  if mask is not None:
    logits = jnp.where(mask[:, :, None], logits,
                       -0.7 * jnp.finfo(jnp.float32).max)
  probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  out = jnp.einsum('bkgts,bskh->btkgh', probs, v)
  return out.reshape(b, t, n, h)


class Attention(nnx.Module):
  """Grouped-query self-attention with RoPE, optional QK-norm and KV cache."""

  def __init__(self, cfg: LLMConfig, *, rngs: nnx.Rngs):
    d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype,
              init_std=cfg.initializer_range, rngs=rngs)
    self.q_proj = Linear((d,), (n, h), ('embed',), ('heads', 'head_dim'),
                         use_bias=cfg.qkv_bias, **kw)
    self.k_proj = Linear((d,), (k, h), ('embed',), ('kv_heads', 'head_dim'),
                         use_bias=cfg.qkv_bias, **kw)
    self.v_proj = Linear((d,), (k, h), ('embed',), ('kv_heads', 'head_dim'),
                         use_bias=cfg.qkv_bias, **kw)
    self.o_proj = Linear((n, h), (d,), ('heads', 'head_dim'), ('embed',),
                         use_bias=cfg.out_bias, **kw)
    if cfg.qk_norm:
      norm_kw = dict(eps=cfg.norm_eps, plus_one=cfg.norm_plus_one,
                     dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
      self.q_norm = RMSNorm(h, 'head_dim', **norm_kw)
      self.k_norm = RMSNorm(h, 'head_dim', **norm_kw)
    else:
      self.q_norm = self.k_norm = None
    self.scale = (cfg.query_pre_attn_scalar or h) ** -0.5
    self.softcap = cfg.attn_logit_softcap
    self.impl = cfg.attention_impl

  def __call__(self, x: Array, sin: Array, cos: Array, mask: Array | None,
               is_causal: bool, kv_cache: tuple[Array, Array] | None,
               cache_index: Array | None):
    q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = apply_rope(q, sin, cos), apply_rope(k, sin, cos)
    if kv_cache is not None:
      k_cache, v_cache = kv_cache
      start = (0, cache_index, 0, 0)
      k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), start)
      v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), start)
      kv_cache = (k, v)
      k, v = k.astype(q.dtype), v.astype(q.dtype)
    if self.softcap is None:
      out = jax.nn.dot_product_attention(
          q, k, v, mask=mask, scale=self.scale, is_causal=is_causal,
          implementation=self.impl)
    else:
      out = _softcap_attention(q, k, v, mask, scale=self.scale,
                               softcap=self.softcap, is_causal=is_causal)
    return self.o_proj(out), kv_cache


class MLP(nnx.Module):
  """Gated MLP: down(act(gate(x)) * up(x)) (SwiGLU / GeGLU)."""

  def __init__(self, cfg: LLMConfig, *, rngs: nnx.Rngs):
    d, f = cfg.hidden_size, cfg.mlp_dim
    kw = dict(use_bias=cfg.mlp_bias, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
              init_std=cfg.initializer_range, rngs=rngs)
    self.gate_proj = Linear((d,), (f,), ('embed',), ('mlp',), **kw)
    self.up_proj = Linear((d,), (f,), ('embed',), ('mlp',), **kw)
    self.down_proj = Linear((f,), (d,), ('mlp',), ('embed',), **kw)
    self.activation = cfg.activation

  def __call__(self, x: Array) -> Array:
    act = ACTIVATIONS[self.activation]
    return self.down_proj(act(self.gate_proj(x)) * self.up_proj(x))


class Block(nnx.Module):
  """Pre-norm decoder block, with Gemma 2/3 post-norms when configured."""

  def __init__(self, cfg: LLMConfig, *, rngs: nnx.Rngs):
    norm = lambda: RMSNorm(cfg.hidden_size, 'embed', eps=cfg.norm_eps,
                           plus_one=cfg.norm_plus_one, dtype=cfg.dtype,
                           param_dtype=cfg.param_dtype, rngs=rngs)
    self.attn_norm = norm()
    self.attn = Attention(cfg, rngs=rngs)
    self.post_attn_norm = norm() if cfg.post_attn_norm else None
    self.mlp_norm = norm()
    self.mlp = MLP(cfg, rngs=rngs)
    self.post_mlp_norm = norm() if cfg.post_mlp_norm else None

  def __call__(self, x: Array, sin: Array, cos: Array, mask: Array | None,
               is_causal: bool, kv_cache=None, cache_index=None):
    h, kv_cache = self.attn(self.attn_norm(x), sin, cos, mask, is_causal,
                            kv_cache, cache_index)
    if self.post_attn_norm is not None:
      h = self.post_attn_norm(h)
    x = x + h
    h = self.mlp(self.mlp_norm(x))
    if self.post_mlp_norm is not None:
      h = self.post_mlp_norm(h)
    return x + h, kv_cache
