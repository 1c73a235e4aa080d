"""`LLMConfig`: the architecture and numerics of the decoder-only LLM, and its gin presets.

`gin/<name>.gin` files bind `LLMConfig.<field> = <literal>` (and may `include` others);
`get_preset(name, **overrides)` parses one into an `LLMConfig` without touching gin's global
configuration.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax

GIN_DIR = os.path.normpath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, 'gin'))

# `LLMConfig.activation` -> the gate activation of the MLP.
ACTIVATIONS = {
    'silu': jax.nn.silu,
    'gelu_tanh': lambda x: jax.nn.gelu(x, approximate=True),
    'gelu': lambda x: jax.nn.gelu(x, approximate=False),
    'relu': jax.nn.relu,
}

# `LLMConfig.remat_policy` -> the `jax.checkpoint` policy of one layer ('none' is no remat).
REMAT_POLICIES = {
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
    if self.activation not in ACTIVATIONS:
      raise ValueError(f'Unknown activation {self.activation!r}')
    if self.remat_policy != 'none' and self.remat_policy not in REMAT_POLICIES:
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
