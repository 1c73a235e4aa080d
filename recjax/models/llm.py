"""Decoder-only LLM backbone: Llama, Gemma 1/2/3 and Qwen2/3 families in Flax NNX.

One `LLM` module covers the families through `LLMConfig` switches (norm style,
activation, QK-norm, biases, soft-capping, local/global attention, RoPE
scaling). Architecture presets live in `gin/*.gin` and are loaded with
`get_preset(name)`.

Parameters carry logical axis names (`vocab`, `embed`, `mlp`, `heads`,
`kv_heads`, `head_dim`, `layers`) for the trainer's logical-axis rules. Variables
are created without eager sharding; the trainer places them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Sequence

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

GIN_DIR = os.path.normpath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, 'gin'))

_ACTIVATIONS = {
    'silu': jax.nn.silu,
    'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'relu': jax.nn.relu,
}

_REMAT_POLICIES = {
    'full': None,  # Save nothing: recompute the whole layer in the backward pass.
    'dots_saveable': jax.checkpoint_policies.dots_saveable,
    'dots_no_batch_saveable':
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@dataclasses.dataclass(frozen=True)
class LLMConfig:
  """Architecture and numerics of a decoder-only LLM.

  The defaults describe a tiny Llama-style model; real sizes come from the
  presets in `gin/` (`get_preset('llama3_8b')`).

  Attributes:
    family: Checkpoint family, used to name HF exports: 'llama', 'gemma',
      'gemma2', 'gemma3', 'qwen2' or 'qwen3'. The math is set by the fields
      below, not by this name.
    vocab_size: Number of token ids (rows of the embedding table).
    hidden_size: Width of the residual stream (`embed` axis).
    num_layers: Number of decoder blocks.
    num_heads: Query heads per layer.
    num_kv_heads: Key/value heads (grouped-query attention); divides
      `num_heads`. Equal to `num_heads` for multi-head attention.
    head_dim: Width of one attention head.
    mlp_dim: Hidden width of the gated MLP (`mlp` axis).
    activation: Gate activation: 'silu' (SwiGLU: Llama, Qwen), 'gelu_tanh'
      (GeGLU: Gemma), 'gelu' (exact GELU) or 'relu'.
    norm_eps: Epsilon of every RMSNorm.
    norm_plus_one: Gemma RMSNorm that scales by (1 + w) with w initialised
      to 0; False scales by w initialised to 1.
    post_attn_norm: Extra RMSNorm on the attention output before the residual
      add (Gemma 2/3).
    post_mlp_norm: Extra RMSNorm on the MLP output before the residual add
      (Gemma 2/3).
    qk_norm: RMSNorm over `head_dim` of queries and keys before RoPE
      (Qwen3, Gemma3).
    qkv_bias: Bias on the q/k/v projections (Qwen2; Llama `attention_bias`).
    out_bias: Bias on the attention output projection (Llama
      `attention_bias`).
    mlp_bias: Bias on the gate/up/down projections (Llama `mlp_bias`).
    scale_embeddings: Multiply token embeddings by sqrt(hidden_size) (Gemma).
    tie_embeddings: Reuse the embedding table as the output projection.
    query_pre_attn_scalar: Attention logits are scaled by this**-0.5; None
      means head_dim**-0.5 (Gemma 2/3 set it, usually to head_dim).
    attn_logit_softcap: If set, attention logits become
      cap * tanh(logits / cap) (Gemma 2: 50). Uses the plain XLA attention
      path because `jax.nn.dot_product_attention` has no soft-capping.
    final_logit_softcap: If set, output logits become cap * tanh(logits / cap)
      (Gemma 2: 30).
    sliding_window: Window of local attention layers: a query attends to keys
      fewer than this many slots behind it (HF semantics). None: no local
      layers.
    sliding_window_pattern: With `sliding_window` set and `layer_types` None,
      layer i is global iff (i + 1) % pattern == 0 (Gemma 3: 6, Gemma 2: 2);
      0 makes every layer local.
    layer_types: Explicit per-layer 'local' / 'global' kinds; overrides the
      pattern when given.
    rope_theta: RoPE base frequency of global layers.
    rope_local_theta: RoPE base frequency of local layers (Gemma 3: 10000);
      None reuses the global RoPE.
    rope_scaling: RoPE frequency scaling of global layers: 'default' (none),
      'linear' (positions divided by `rope_scaling_factor`), 'llama3' or
      'yarn' (YaRN, as HF transformers: frequencies blend interpolation and
      extrapolation between the beta correction dims, and cos/sin are scaled
      by the attention factor).
    rope_scaling_factor: Factor for 'linear', 'llama3' and 'yarn' scaling
      ('yarn': > 1, context length / `rope_original_max_position`).
    rope_low_freq_factor: 'llama3' low-frequency factor (Llama 3.1: 1).
    rope_high_freq_factor: 'llama3' high-frequency factor (Llama 3.1: 4).
    rope_original_max_position: 'llama3' and 'yarn' pre-training context
      (Llama 3: 8192; Qwen2.5/Qwen3 YaRN: 32768).
    rope_beta_fast: 'yarn' rotations bounding pure extrapolation (HF: 32).
    rope_beta_slow: 'yarn' rotations bounding pure interpolation (HF: 1).
    rope_attention_factor: 'yarn' scale of cos/sin; None means
      0.1 * ln(rope_scaling_factor) + 1 (HF's default).
    rope_truncate: 'yarn' rounds the correction range to whole dims (HF
      `truncate`, default True).
    max_position_embeddings: Longest context the checkpoint was trained for
      (recorded for export; nothing is allocated from it).
    num_extra_positions: Size of a second, learned position table added to
      the embeddings (GLM-style intra-entity positions); 0 disables it.
    bos_token_id: Beginning-of-sequence id (recorded for export/decoding).
    eos_token_id: End-of-sequence id(s) (recorded for export/decoding).
    pad_token_id: Padding id (recorded for export/decoding).
    dtype: Compute dtype of activations and matmuls ('bfloat16' recommended;
      'float32' for exactness tests).
    param_dtype: Storage dtype of parameters ('float32' master weights).
    scan_layers: Stack layers along a 'layers' axis and run them with
      `jax.lax.scan` (fast compile; recommended). False keeps a Python list.
    remat_policy: Activation rematerialisation per layer: 'none', 'full',
      'dots_saveable' or 'dots_no_batch_saveable'.
    attention_impl: `implementation` passed to `jax.nn.dot_product_attention`:
      None (JAX's default choice), 'xla' or 'cudnn'.
    initializer_range: Stddev of the normal init of weights and embeddings.
  """
  family: str = 'llama'
  vocab_size: int = 256
  hidden_size: int = 64
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 16
  mlp_dim: int = 128
  activation: str = 'silu'
  norm_eps: float = 1e-6
  norm_plus_one: bool = False
  post_attn_norm: bool = False
  post_mlp_norm: bool = False
  qk_norm: bool = False
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  scale_embeddings: bool = False
  tie_embeddings: bool = True
  query_pre_attn_scalar: float | None = None
  attn_logit_softcap: float | None = None
  final_logit_softcap: float | None = None
  sliding_window: int | None = None
  sliding_window_pattern: int = 0
  layer_types: tuple[str, ...] | None = None
  rope_theta: float = 10_000.0
  rope_local_theta: float | None = None
  rope_scaling: str = 'default'
  rope_scaling_factor: float = 1.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_max_position: int = 8192
  rope_beta_fast: float = 32.0
  rope_beta_slow: float = 1.0
  rope_attention_factor: float | None = None
  rope_truncate: bool = True
  max_position_embeddings: int = 8192
  num_extra_positions: int = 0
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None
  dtype: str = 'bfloat16'
  param_dtype: str = 'float32'
  scan_layers: bool = True
  remat_policy: str = 'none'
  attention_impl: str | None = None
  initializer_range: float = 0.02

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f'num_heads={self.num_heads} is not a multiple of '
                       f'num_kv_heads={self.num_kv_heads}')
    if self.activation not in _ACTIVATIONS:
      raise ValueError(f'Unknown activation {self.activation!r}')
    if self.remat_policy != 'none' and self.remat_policy not in _REMAT_POLICIES:
      raise ValueError(f'Unknown remat_policy {self.remat_policy!r}')
    if self.rope_scaling not in ('default', 'linear', 'llama3', 'yarn'):
      raise ValueError(f'Unknown rope_scaling {self.rope_scaling!r}')
    if self.rope_scaling != 'default' and self.rope_scaling_factor <= 0:
      raise ValueError(f'rope_scaling_factor={self.rope_scaling_factor} must be > 0')
    if self.rope_scaling == 'yarn':
      if self.rope_scaling_factor <= 1:
        raise ValueError(f"rope_scaling='yarn' needs rope_scaling_factor > 1, got "
                         f'{self.rope_scaling_factor}')
      if not self.rope_beta_fast > self.rope_beta_slow > 0:
        raise ValueError('yarn needs rope_beta_fast > rope_beta_slow > 0, got '
                         f'{self.rope_beta_fast} and {self.rope_beta_slow}')
      if self.rope_attention_factor is not None and self.rope_attention_factor <= 0:
        raise ValueError(f'rope_attention_factor={self.rope_attention_factor} '
                         'must be > 0')
      if self.rope_original_max_position <= 0:
        raise ValueError('yarn needs rope_original_max_position > 0')
    if self.layer_types is not None:
      if len(self.layer_types) != self.num_layers:
        raise ValueError('layer_types needs one entry per layer')
      if set(self.layer_types) - {'local', 'global'}:
        raise ValueError(f'layer_types must be local/global: {self.layer_types}')
      if 'local' in self.layer_types and self.sliding_window is None:
        raise ValueError('local layers need sliding_window')
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, 'eos_token_id', tuple(self.eos_token_id))

  @property
  def local_layers(self) -> tuple[bool, ...]:
    """Per layer, whether it uses sliding-window (local) attention."""
    if self.layer_types is not None:
      return tuple(t == 'local' for t in self.layer_types)
    if self.sliding_window is None:
      return (False,) * self.num_layers
    p = self.sliding_window_pattern
    return tuple(p <= 0 or (i + 1) % p != 0 for i in range(self.num_layers))

  @property
  def rope_attention_scale(self) -> float:
    """Factor on the cos/sin tables of global layers (YaRN's attention factor)."""
    if self.rope_scaling != 'yarn':
      return 1.0
    if self.rope_attention_factor is not None:
      return self.rope_attention_factor
    return 0.1 * math.log(self.rope_scaling_factor) + 1.0

  @property
  def eos_token_ids(self) -> tuple[int, ...]:
    """`eos_token_id` as a tuple (possibly empty)."""
    if self.eos_token_id is None:
      return ()
    if isinstance(self.eos_token_id, int):
      return (self.eos_token_id,)
    return tuple(self.eos_token_id)

  def num_params(self) -> int:
    """Parameter count (without LoRA adapters)."""
    d, h, f = self.hidden_size, self.head_dim, self.mlp_dim
    attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads)
    if self.qkv_bias:
      attn += h * (self.num_heads + 2 * self.num_kv_heads)
    if self.out_bias:
      attn += d
    mlp = 3 * d * f + (2 * f + d if self.mlp_bias else 0)
    norms = d * (2 + self.post_attn_norm + self.post_mlp_norm)
    norms += 2 * h if self.qk_norm else 0
    total = self.num_layers * (attn + mlp + norms) + d
    total += self.vocab_size * d * (1 if self.tie_embeddings else 2)
    return total + self.num_extra_positions * d


def get_preset(name: str, **overrides: Any) -> LLMConfig:
  """Returns the `LLMConfig` defined by `gin/<name>.gin`, with overrides.

  The gin file holds `LLMConfig.<field> = <literal>` bindings and may
  `include` other files (relative to the including file). Parsing does not
  touch gin's global configuration.

  Args:
    name: preset name (e.g. 'llama3_8b', 'tiny_llama') or a path to a .gin file.
    **overrides: fields replaced after parsing (e.g. dtype='float32').
  """
  path = name if name.endswith('.gin') else os.path.join(GIN_DIR, name + '.gin')
  if not os.path.exists(path):
    available = sorted(p[:-4] for p in os.listdir(GIN_DIR) if p.endswith('.gin'))
    raise ValueError(f'No preset {name!r}; available: {available}')
  fields = _parse_gin_bindings(path)
  fields.update(overrides)
  if isinstance(fields.get('layer_types'), list):
    fields['layer_types'] = tuple(fields['layer_types'])
  return LLMConfig(**fields)


def _parse_gin_bindings(path: str) -> dict[str, Any]:
  from gin import config as gin_config  # pylint: disable=g-import-not-at-top
  from gin import config_parser  # pylint: disable=g-import-not-at-top
  with open(path) as f:
    text = f.read()
  known = {f.name for f in dataclasses.fields(LLMConfig)}
  fields: dict[str, Any] = {}
  for stmt in config_parser.ConfigParser(text, gin_config.ParserDelegate()):
    if isinstance(stmt, config_parser.IncludeStatement):
      fields.update(_parse_gin_bindings(
          os.path.join(os.path.dirname(path), stmt.filename)))
    elif isinstance(stmt, config_parser.BindingStatement):
      if stmt.selector != 'LLMConfig' or stmt.scope:
        raise ValueError(f'{path}: only LLMConfig.<field> bindings allowed, '
                         f'got {stmt.selector}')
      if stmt.arg_name not in known:
        raise ValueError(f'{path}: LLMConfig has no field {stmt.arg_name!r}')
      fields[stmt.arg_name] = stmt.value
    else:
      raise ValueError(f'{path}: unsupported gin statement {stmt}')
  return fields


# ------------------------------------------------------------------------------
# Layers.
# ------------------------------------------------------------------------------


def _param(rngs: nnx.Rngs, init, shape: Sequence[int], names: Sequence[Any],
           dtype) -> nnx.Param:
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
    self.kernel = _param(rngs, nnx.initializers.normal(init_std),
                         self.in_shape + self.out_shape,
                         self.in_axes + self.out_axes, param_dtype)
    self.bias = (_param(rngs, nnx.initializers.zeros, self.out_shape,
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
    self.scale = _param(rngs, init, (dim,), (axis_name,), param_dtype)
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


def _rope_tables(positions: Array, inv_freq: np.ndarray,
                 scale: float = 1.0) -> tuple[Array, Array]:
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
    act = _ACTIVATIONS[self.activation]
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


# ------------------------------------------------------------------------------
# KV cache and outputs.
# ------------------------------------------------------------------------------


@flax.struct.dataclass
class KVCache:
  """Fixed-size key/value cache of all layers.

  Slots are written left to right; `index` is the next free slot and is shared
  by all rows (prompts of different lengths are left-padded).

  Attributes:
    k: keys, (layers, batch, max_len, kv_heads, head_dim).
    v: values, same shape as `k`.
    segment_ids: (batch, max_len) int32 segment of each written slot; 0 marks
      empty slots and padding, which no real token attends to.
    prefix: (batch, max_len) bool, slots every later token of the segment may
      see bidirectionally (prefix-LM attention).
    index: () int32, next slot to write.
  """
  k: Array
  v: Array
  segment_ids: Array
  prefix: Array
  index: Array

  @classmethod
  def create(cls, cfg: LLMConfig, batch_size: int, max_len: int,
             dtype=None) -> 'KVCache':
    """An empty cache; `dtype` defaults to the model's compute dtype."""
    shape = (cfg.num_layers, batch_size, max_len, cfg.num_kv_heads, cfg.head_dim)
    dtype = jnp.dtype(dtype or cfg.dtype)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
               segment_ids=jnp.zeros((batch_size, max_len), jnp.int32),
               prefix=jnp.zeros((batch_size, max_len), bool),
               index=jnp.zeros((), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.k.shape[2]

  def gather(self, rows: Array) -> 'KVCache':
    """Cache whose row i is row `rows[i]` of this one (beam reordering)."""
    return self.replace(k=self.k[:, rows], v=self.v[:, rows],
                        segment_ids=self.segment_ids[rows],
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


class LLM(nnx.Module):
  """Decoder-only transformer language model."""

  def __init__(self, cfg: LLMConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    init = nnx.initializers.normal(cfg.initializer_range)
    self.embedding = _param(rngs, init, (cfg.vocab_size, cfg.hidden_size),
                            ('vocab', 'embed'), cfg.param_dtype)
    self.extra_position_embedding = (
        _param(rngs, init, (cfg.num_extra_positions, cfg.hidden_size),
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
                    _param(rngs, init, (cfg.hidden_size, cfg.vocab_size),
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
    cfg = self.cfg
    dtype = jnp.dtype(cfg.dtype)
    b, t = tokens.shape
    if attention_mask_kind not in ('causal', 'prefix'):
      raise ValueError(f'Unknown attention_mask_kind {attention_mask_kind!r}')
    if attention_mask_kind == 'prefix' and (prefix_lengths is None) == (prefix_mask is None):
      raise ValueError("attention_mask_kind='prefix' needs one of prefix_lengths and "
                       "prefix_mask")

    start = cache.index if cache is not None else 0
    q_slot = start + jnp.arange(t, dtype=jnp.int32)
    if positions is None:
      positions = jnp.broadcast_to(q_slot[None], (b, t))

    x = jnp.take(self.embedding[...], tokens, axis=0).astype(dtype)
    if cfg.scale_embeddings:
      x = x * jnp.asarray(math.sqrt(cfg.hidden_size), dtype)
    if self.extra_position_embedding is not None and extra_positions is not None:
      x = x + jnp.take(self.extra_position_embedding[...], extra_positions,
                       axis=0).astype(dtype)

    # Masks over (query slot, key slot).
    local_flags = cfg.local_layers
    has_local = any(local_flags)
    plain_causal = (cache is None and segment_ids is None and
                    attention_mask_kind == 'causal')
    q_seg = (jnp.ones((b, t), jnp.int32) if segment_ids is None
             else segment_ids.astype(jnp.int32))
    if attention_mask_kind != 'prefix':
      q_prefix = jnp.zeros((b, t), bool)
    elif prefix_mask is not None:
      q_prefix = prefix_mask.astype(bool)
    else:
      q_prefix = q_slot[None, :] < prefix_lengths[:, None]
    if cache is None:
      k_slot, k_seg, k_prefix = q_slot, q_seg, q_prefix
    else:
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
    if has_local:
      window = (q_slot[:, None] - k_slot[None, :]) < cfg.sliding_window
      base = causal[None] if mask_global is None else mask_global[:, 0]
      mask_local = (base & window)[:, None]

    # RoPE tables; local layers may use their own base frequency.
    rope_global = _rope_tables(positions, rope_inv_freq(
        cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, cfg.rope_scaling_factor,
        cfg.rope_low_freq_factor, cfg.rope_high_freq_factor,
        cfg.rope_original_max_position, cfg.rope_beta_fast, cfg.rope_beta_slow,
        cfg.rope_truncate), cfg.rope_attention_scale)
    rope_local = rope_global
    if has_local and cfg.rope_local_theta is not None:
      rope_local = _rope_tables(
          positions, rope_inv_freq(cfg.head_dim, cfg.rope_local_theta))

    want_layer = return_hidden is not True and return_hidden is not False
    target = None
    if want_layer:
      target = int(return_hidden) % cfg.num_layers

    def run_block(block, x, selected, is_local, layer_idx, kv):
      (sin, cos), mask = rope_global, mask_global
      if is_local is True:
        (sin, cos), mask = rope_local, mask_local
      elif is_local is not False:  # Traced per-layer flag inside the scan.
        sin = jnp.where(is_local, rope_local[0], rope_global[0])
        cos = jnp.where(is_local, rope_local[1], rope_global[1])
        if mask_global is None:
          mask = jnp.where(is_local, mask_local, causal[None, None])
        else:
          mask = jnp.where(is_local, mask_local, mask_global)
      is_causal = mask is None
      x, kv = block(x, sin, cos, mask, is_causal, kv,
                    None if cache is None else start)
      if want_layer:
        selected = jnp.where(layer_idx == target, x, selected)
      return x, selected, kv

    selected = jnp.zeros_like(x) if want_layer else None
    remat = cfg.remat_policy != 'none'
    policy = _REMAT_POLICIES.get(cfg.remat_policy)
    if cfg.scan_layers:
      graphdef, state = nnx.split(self.layers)
      all_same = len(set(local_flags)) == 1

      def body(carry, xs):
        x, selected = carry
        layer_state, layer_idx, is_local, kv = xs
        if all_same:
          is_local = local_flags[0]
        x, selected, kv = run_block(nnx.merge(graphdef, layer_state), x,
                                    selected, is_local, layer_idx, kv)
        return (x, selected), kv

      if remat:
        body = jax.checkpoint(body, policy=policy, prevent_cse=False)
      kv_in = None if cache is None else (cache.k, cache.v)
      xs = (state, jnp.arange(cfg.num_layers), jnp.asarray(local_flags), kv_in)
      (x, selected), kv_out = jax.lax.scan(body, (x, selected), xs)
      if cache is not None:
        cache = cache.replace(k=kv_out[0], v=kv_out[1])
    else:
      new_k, new_v = [], []
      for i, block in enumerate(self.layers):
        kv = None if cache is None else (cache.k[i], cache.v[i])
        if remat:
          graphdef, state = nnx.split(block)

          def fn(state, x, selected, kv, graphdef=graphdef, i=i):
            return run_block(nnx.merge(graphdef, state), x, selected,
                             local_flags[i], i, kv)
          x, selected, kv = jax.checkpoint(fn, policy=policy)(
              state, x, selected, kv)
        else:
          x, selected, kv = run_block(block, x, selected, local_flags[i], i, kv)
        if cache is not None:
          new_k.append(kv[0])
          new_v.append(kv[1])
      if cache is not None:
        cache = cache.replace(k=jnp.stack(new_k), v=jnp.stack(new_v))

    x = self.final_norm(x)
    hidden = selected if want_layer else (x if return_hidden else None)
    logits = self.logits(x) if compute_logits else None
    if cache is not None:
      cache = cache.replace(index=cache.index + t)
    return LLMOutput(logits=logits, hidden=hidden, cache=cache)

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
