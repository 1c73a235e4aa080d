"""Hugging Face checkpoint import/export for `recjax.models.llm.LLM`.

Reads a local HF model directory (config.json + *.safetensors, sharded with
model.safetensors.index.json or not) one tensor at a time, converts each to the
recjax layout and places it straight onto its target sharding, so host memory
holds at most one (stacked) parameter at a time. Exports write config.json and
safetensors files (sharded above `max_shard_size`) that `transformers` loads.

Supported `model_type`s: llama, gemma, gemma2, gemma3_text (and the text part
of gemma3), qwen2, qwen3.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterator

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from recjax.models import llm

_FAMILIES = {
    'llama': 'llama',
    'gemma': 'gemma',
    'gemma2': 'gemma2',
    'gemma3_text': 'gemma3',
    'gemma3': 'gemma3',
    'qwen2': 'qwen2',
    'qwen3': 'qwen3',
}
_HF_ARCH = {
    'llama': ('llama', 'LlamaForCausalLM'),
    'gemma': ('gemma', 'GemmaForCausalLM'),
    'gemma2': ('gemma2', 'Gemma2ForCausalLM'),
    'gemma3': ('gemma3_text', 'Gemma3ForCausalLM'),
    'qwen2': ('qwen2', 'Qwen2ForCausalLM'),
    'qwen3': ('qwen3', 'Qwen3ForCausalLM'),
}
_ACTIVATIONS = {
    'silu': 'silu',
    'swish': 'silu',
    'gelu_pytorch_tanh': 'gelu_tanh',
    'gelu_new': 'gelu_tanh',
    'gelu_fast': 'gelu_tanh',
    'gelu': 'gelu',
    'relu': 'relu',
}
_HF_ACTIVATIONS = {'silu': 'silu', 'gelu_tanh': 'gelu_pytorch_tanh',
                   'gelu': 'gelu', 'relu': 'relu'}
# recjax's learned extra-position table has no HF counterpart: exports keep it
# under these names (transformers ignores both) so it round-trips.
_EXTRA_POSITIONS_NAME = 'recjax.extra_position_embedding.weight'
_EXTRA_POSITIONS_KEY = 'recjax_num_extra_positions'

# ------------------------------------------------------------------------------
# config.json <-> LLMConfig.
# ------------------------------------------------------------------------------


def _rope_dicts(hf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
  """(global, local) RoPE parameter dicts from old- or new-style configs."""
  params = hf.get('rope_parameters')
  if params and ('full_attention' in params or 'sliding_attention' in params):
    return dict(params.get('full_attention') or {}), params.get('sliding_attention')
  glob = dict(params or hf.get('rope_scaling') or {})
  if 'rope_theta' not in glob and hf.get('rope_theta') is not None:
    glob['rope_theta'] = hf['rope_theta']
  return glob, None


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> llm.LLMConfig:
  """Maps an HF config.json dict to `LLMConfig`; `overrides` replace fields."""
  if hf.get('model_type') == 'gemma3' and 'text_config' in hf:
    hf = {**hf['text_config'], 'model_type': 'gemma3_text'}
  model_type = hf.get('model_type')
  if model_type not in _FAMILIES:
    raise ValueError(f'Unsupported HF model_type {model_type!r}; supported: '
                     f'{sorted(_FAMILIES)}')
  family = _FAMILIES[model_type]
  gemma = family.startswith('gemma')
  heads = hf['num_attention_heads']
  head_dim = hf.get('head_dim') or hf['hidden_size'] // heads
  act_name = hf.get('hidden_activation') or hf.get('hidden_act') or 'silu'
  if family == 'gemma' and act_name == 'gelu':
    act_name = 'gelu_pytorch_tanh'  # Legacy Gemma configs mean the tanh form.
  if act_name not in _ACTIVATIONS:
    raise ValueError(f'Unsupported activation {act_name!r}')
  if hf.get('use_bidirectional_attention'):
    raise ValueError('Bidirectional Gemma 3 variants are not supported')

  rope, rope_local = _rope_dicts(hf)
  default_theta = 1e6 if family == 'gemma3' else 1e4
  rope_type = rope.get('rope_type', rope.get('type', 'default'))
  if rope.get('partial_rotary_factor', 1.0) != 1.0:
    raise ValueError('partial_rotary_factor != 1 is not supported')
  if rope_type not in ('default', 'linear', 'llama3', 'yarn'):
    raise ValueError(f'Unsupported rope type {rope_type!r}')
  max_position = hf.get('max_position_embeddings', 8192)
  original_max_position = int(rope.get('original_max_position_embeddings') or
                              max_position)
  factor = rope.get('factor')
  if factor is None:  # HF's yarn then takes max_position / original_max_position.
    factor = max_position / original_max_position if rope_type == 'yarn' else 1.0
  attention_factor = rope.get('attention_factor')
  if (rope_type == 'yarn' and attention_factor is None and rope.get('mscale') and
      rope.get('mscale_all_dim')):
    attention_factor = (_yarn_mscale(factor, rope['mscale']) /
                        _yarn_mscale(factor, rope['mscale_all_dim']))
  local_theta = None
  if family == 'gemma3':
    local_theta = (rope_local or {}).get(
        'rope_theta', hf.get('rope_local_base_freq', 1e4))
    if (rope_local or {}).get('rope_type', 'default') != 'default':
      raise ValueError('Scaled RoPE on local layers is not supported')

  num_layers = hf['num_hidden_layers']
  layer_types = hf.get('layer_types')
  if layer_types is None:
    if family == 'gemma2':
      layer_types = ['sliding_attention' if (i + 1) % 2 else 'full_attention'
                     for i in range(num_layers)]
    elif family == 'gemma3':
      p = hf.get('sliding_window_pattern', 6)
      layer_types = ['sliding_attention' if (i + 1) % p else 'full_attention'
                     for i in range(num_layers)]
  local = None
  sliding_window = None
  if layer_types and 'sliding_attention' in layer_types:
    local = tuple('local' if t == 'sliding_attention' else 'global'
                  for t in layer_types)
    sliding_window = hf['sliding_window']
  if family in ('qwen2', 'qwen3') and hf.get('use_sliding_window') and not local:
    raise ValueError('Qwen sliding-window configs without layer_types are '
                     'not supported')

  attention_bias = bool(hf.get('attention_bias', False))
  fields = dict(
      family=family,
      vocab_size=hf['vocab_size'],
      hidden_size=hf['hidden_size'],
      num_layers=num_layers,
      num_heads=heads,
      num_kv_heads=hf.get('num_key_value_heads') or heads,
      head_dim=head_dim,
      mlp_dim=hf['intermediate_size'],
      activation=_ACTIVATIONS[act_name],
      norm_eps=hf.get('rms_norm_eps', 1e-6),
      norm_plus_one=gemma,
      post_attn_norm=family in ('gemma2', 'gemma3'),
      post_mlp_norm=family in ('gemma2', 'gemma3'),
      qk_norm=family in ('qwen3', 'gemma3'),
      qkv_bias=True if family == 'qwen2' else attention_bias,
      out_bias=False if family == 'qwen2' else attention_bias,
      mlp_bias=bool(hf.get('mlp_bias', False)),
      scale_embeddings=gemma,
      tie_embeddings=bool(hf.get('tie_word_embeddings', gemma)),
      query_pre_attn_scalar=(hf.get('query_pre_attn_scalar')
                             if family in ('gemma2', 'gemma3') else None),
      attn_logit_softcap=hf.get('attn_logit_softcapping'),
      final_logit_softcap=hf.get('final_logit_softcapping'),
      sliding_window=sliding_window,
      layer_types=local,
      rope_theta=float(rope.get('rope_theta', default_theta)),
      rope_local_theta=None if local_theta is None else float(local_theta),
      rope_scaling=rope_type,
      rope_scaling_factor=float(factor),
      rope_low_freq_factor=float(rope.get('low_freq_factor', 1.0)),
      rope_high_freq_factor=float(rope.get('high_freq_factor', 4.0)),
      rope_original_max_position=original_max_position,
      rope_beta_fast=float(rope.get('beta_fast') or 32.0),
      rope_beta_slow=float(rope.get('beta_slow') or 1.0),
      rope_attention_factor=(None if attention_factor is None
                             else float(attention_factor)),
      rope_truncate=bool(rope.get('truncate', True)),
      max_position_embeddings=max_position,
      bos_token_id=hf.get('bos_token_id'),
      eos_token_id=(tuple(hf['eos_token_id'])
                    if isinstance(hf.get('eos_token_id'), list)
                    else hf.get('eos_token_id')),
      pad_token_id=hf.get('pad_token_id'),
      initializer_range=hf.get('initializer_range', 0.02),
      num_extra_positions=hf.get(_EXTRA_POSITIONS_KEY, 0),
  )
  fields.update(overrides)
  return llm.LLMConfig(**fields)


def _yarn_mscale(factor: float, mscale: float) -> float:
  """HF's YaRN `get_mscale`."""
  return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def load_hf_config(path: str, **overrides: Any) -> llm.LLMConfig:
  """`LLMConfig` of the HF checkpoint directory `path`."""
  with open(os.path.join(path, 'config.json')) as f:
    return config_from_hf(json.load(f), **overrides)


def hf_config_dict(cfg: llm.LLMConfig, torch_dtype: str = 'float32') -> dict[str, Any]:
  """The HF config.json dict of `cfg` (for its `family`).

  Raises:
    ValueError: if `cfg` uses options its family cannot express in HF.
  """
  if cfg.family not in _HF_ARCH:
    raise ValueError(f'Cannot export family {cfg.family!r}')
  model_type, arch = _HF_ARCH[cfg.family]
  rope_scaling = None
  if cfg.rope_scaling == 'linear':
    rope_scaling = {'rope_type': 'linear', 'factor': cfg.rope_scaling_factor}
  elif cfg.rope_scaling == 'llama3':
    rope_scaling = {
        'rope_type': 'llama3', 'factor': cfg.rope_scaling_factor,
        'low_freq_factor': cfg.rope_low_freq_factor,
        'high_freq_factor': cfg.rope_high_freq_factor,
        'original_max_position_embeddings': cfg.rope_original_max_position}
  elif cfg.rope_scaling == 'yarn':
    rope_scaling = {
        'rope_type': 'yarn', 'factor': cfg.rope_scaling_factor,
        'original_max_position_embeddings': cfg.rope_original_max_position,
        'beta_fast': cfg.rope_beta_fast, 'beta_slow': cfg.rope_beta_slow,
        'truncate': cfg.rope_truncate}
    if cfg.rope_attention_factor is not None:
      rope_scaling['attention_factor'] = cfg.rope_attention_factor
  hf = {
      'architectures': [arch],
      'model_type': model_type,
      'vocab_size': cfg.vocab_size,
      'hidden_size': cfg.hidden_size,
      'intermediate_size': cfg.mlp_dim,
      'num_hidden_layers': cfg.num_layers,
      'num_attention_heads': cfg.num_heads,
      'num_key_value_heads': cfg.num_kv_heads,
      'head_dim': cfg.head_dim,
      'rms_norm_eps': cfg.norm_eps,
      'max_position_embeddings': cfg.max_position_embeddings,
      'rope_theta': cfg.rope_theta,
      'rope_scaling': rope_scaling,
      'tie_word_embeddings': cfg.tie_embeddings,
      'attention_bias': cfg.out_bias if cfg.family != 'qwen2' else False,
      'attention_dropout': 0.0,
      'initializer_range': cfg.initializer_range,
      'bos_token_id': cfg.bos_token_id,
      'eos_token_id': (list(cfg.eos_token_id)
                       if isinstance(cfg.eos_token_id, tuple)
                       else cfg.eos_token_id),
      'pad_token_id': cfg.pad_token_id,
      'torch_dtype': torch_dtype,
      'use_cache': True,
  }
  act = _HF_ACTIVATIONS[cfg.activation]
  if cfg.family.startswith('gemma'):
    hf['hidden_activation'] = act
    hf['hidden_act'] = act
  else:
    hf['hidden_act'] = act
  if cfg.family == 'llama':
    hf['mlp_bias'] = cfg.mlp_bias
  if cfg.family in ('qwen2', 'qwen3'):
    hf['use_sliding_window'] = any(cfg.local_layers)
    hf['sliding_window'] = cfg.sliding_window
    hf['max_window_layers'] = cfg.num_layers
  if cfg.family in ('gemma2', 'gemma3'):
    hf['query_pre_attn_scalar'] = cfg.query_pre_attn_scalar or cfg.head_dim
    hf['attn_logit_softcapping'] = cfg.attn_logit_softcap
    hf['final_logit_softcapping'] = cfg.final_logit_softcap
    hf['sliding_window'] = cfg.sliding_window
  if any(cfg.local_layers) or cfg.family in ('gemma2', 'gemma3'):
    hf['layer_types'] = ['sliding_attention' if l else 'full_attention'
                         for l in cfg.local_layers]
  if cfg.family == 'gemma3':
    hf['rope_local_base_freq'] = cfg.rope_local_theta or cfg.rope_theta
  if cfg.num_extra_positions:
    hf[_EXTRA_POSITIONS_KEY] = cfg.num_extra_positions

  # Everything the family cannot express would be silently lost: refuse.
  back = config_from_hf(json.loads(json.dumps(hf)))
  arch_fields = [
      'activation', 'norm_plus_one', 'post_attn_norm', 'post_mlp_norm',
      'qk_norm', 'qkv_bias', 'out_bias', 'mlp_bias', 'scale_embeddings',
      'tie_embeddings', 'attn_logit_softcap', 'final_logit_softcap',
      'rope_scaling', 'rope_theta']
  diff = [f for f in arch_fields if getattr(back, f) != getattr(cfg, f)]
  if back.local_layers != cfg.local_layers:
    diff.append('local_layers')
  if (back.query_pre_attn_scalar or cfg.head_dim) != (
      cfg.query_pre_attn_scalar or cfg.head_dim):
    diff.append('query_pre_attn_scalar')
  if any(cfg.local_layers) and (back.rope_local_theta or back.rope_theta) != (
      cfg.rope_local_theta or cfg.rope_theta):
    diff.append('rope_local_theta')
  if diff:
    raise ValueError(f'Family {cfg.family!r} cannot express {diff} of {cfg}')
  return hf


# ------------------------------------------------------------------------------
# Parameter name and layout mapping.
# ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Rule:
  """How one recjax parameter maps to HF tensors (layout functions work on
  numpy and JAX arrays alike)."""
  hf_name: str  # With '{i}' for the layer index when per layer.
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _identity(x):
  return x


def _transpose(x):
  return x.T


def _rules(cfg: llm.LLMConfig) -> dict[str, _Rule]:
  """Rules keyed by recjax path ('.'-joined; per-layer paths without index)."""
  d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

  def in_proj(heads):  # HF (heads*h, d) <-> ours (d, heads, h).
    return (lambda x: x.T.reshape(d, heads, h),
            lambda x: x.reshape(d, heads * h).T)

  def head_bias(heads):
    return (lambda x: x.reshape(heads, h), lambda x: x.reshape(heads * h))

  layer = 'model.layers.{i}.'
  rules = {
      'embedding': _Rule('model.embed_tokens.weight', _identity, _identity),
      'final_norm.scale': _Rule('model.norm.weight', _identity, _identity),
      'lm_head': _Rule('lm_head.weight', _transpose, _transpose),
      'extra_position_embedding': _Rule(_EXTRA_POSITIONS_NAME, _identity,
                                        _identity),
      'attn.o_proj.kernel': _Rule(
          layer + 'self_attn.o_proj.weight',
          lambda x: x.T.reshape(n, h, d),
          lambda x: x.reshape(n * h, d).T),
      'attn.o_proj.bias': _Rule(layer + 'self_attn.o_proj.bias', _identity,
                                _identity),
      'attn.q_norm.scale': _Rule(layer + 'self_attn.q_norm.weight', _identity,
                                 _identity),
      'attn.k_norm.scale': _Rule(layer + 'self_attn.k_norm.weight', _identity,
                                 _identity),
      'attn_norm.scale': _Rule(layer + 'input_layernorm.weight', _identity,
                               _identity),
  }
  for name, heads in (('q', n), ('k', k), ('v', k)):
    rules[f'attn.{name}_proj.kernel'] = _Rule(
        layer + f'self_attn.{name}_proj.weight', *in_proj(heads))
    rules[f'attn.{name}_proj.bias'] = _Rule(
        layer + f'self_attn.{name}_proj.bias', *head_bias(heads))
  for name in ('gate', 'up', 'down'):
    rules[f'mlp.{name}_proj.kernel'] = _Rule(
        layer + f'mlp.{name}_proj.weight', _transpose, _transpose)
    rules[f'mlp.{name}_proj.bias'] = _Rule(
        layer + f'mlp.{name}_proj.bias', _identity, _identity)
  if cfg.post_attn_norm or cfg.post_mlp_norm:
    rules['post_attn_norm.scale'] = _Rule(
        layer + 'post_attention_layernorm.weight', _identity, _identity)
    rules['mlp_norm.scale'] = _Rule(
        layer + 'pre_feedforward_layernorm.weight', _identity, _identity)
    rules['post_mlp_norm.scale'] = _Rule(
        layer + 'post_feedforward_layernorm.weight', _identity, _identity)
  else:
    rules['mlp_norm.scale'] = _Rule(
        layer + 'post_attention_layernorm.weight', _identity, _identity)
  return rules


def _split_path(path: tuple[Any, ...]) -> tuple[str, int | None]:
  """('layers', 3, 'attn', ...) -> ('attn...', 3); scanned layers -> index None."""
  if path[0] != 'layers':
    return '.'.join(map(str, path)), None
  if isinstance(path[1], int):
    return '.'.join(map(str, path[2:])), path[1]
  return '.'.join(map(str, path[1:])), None


def _check_no_lora(path: tuple[Any, ...]) -> None:
  if str(path[-1]).startswith('lora_'):
    raise ValueError('The model has LoRA adapters: merge them first with '
                     'recjax.models.lora.merge_lora(model).')


# ------------------------------------------------------------------------------
# Import.
# ------------------------------------------------------------------------------


class _TensorReader:
  """Reads single tensors from the safetensors files of a directory."""

  def __init__(self, path: str, stack: contextlib.ExitStack):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    index = os.path.join(path, 'model.safetensors.index.json')
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)['weight_map']
      files = sorted(set(weight_map.values()))
    else:
      files = sorted(p for p in os.listdir(path) if p.endswith('.safetensors'))
      weight_map = None
    if not files:
      raise FileNotFoundError(f'No *.safetensors files in {path}')
    handles = {f: stack.enter_context(
        safe_open(os.path.join(path, f), framework='numpy')) for f in files}
    if weight_map is None:
      weight_map = {k: f for f, h in handles.items() for k in h.keys()}
    self._handles = handles
    self.weight_map = weight_map
    # Multimodal Gemma 3 nests the text model (e.g. 'model.language_model.').
    embed = [k for k in weight_map if k.endswith('embed_tokens.weight')]
    if len(embed) != 1:
      raise ValueError(f'Cannot find a unique embed_tokens tensor: {embed}')
    self._prefix = embed[0][:-len('embed_tokens.weight')]

  def name(self, hf_name: str) -> str:
    if hf_name.startswith('model.'):
      return self._prefix + hf_name[len('model.'):]
    return hf_name

  def __contains__(self, hf_name: str) -> bool:
    return self.name(hf_name) in self.weight_map

  def get(self, hf_name: str) -> np.ndarray:
    name = self.name(hf_name)
    if name not in self.weight_map:
      raise KeyError(f'Tensor {name!r} not found in the checkpoint')
    return self.get_raw(name)

  def get_raw(self, name: str) -> np.ndarray:
    """The tensor stored under exactly `name`."""
    return self._handles[self.weight_map[name]].get_tensor(name)


def _shardings_for(abstract_state: nnx.State, mesh, rules) -> dict[tuple, Any]:
  """NamedShardings from logical rules; axes without a usable rule replicate."""
  with nnx.logical_axis_rules(rules or ()):
    specs = nnx.get_partition_spec(abstract_state)
  shapes = {p: v.shape for p, v in nnx.to_flat_state(abstract_state)}
  out = {}
  for path, v in nnx.to_flat_state(specs):
    entries = []
    for dim, entry in zip(shapes[path], tuple(v.get_value())):
      axes = (entry,) if isinstance(entry, str) else tuple(entry or ())
      axes = tuple(a for a in axes if a in mesh.shape)
      size = int(np.prod([mesh.shape[a] for a in axes]))
      if not axes or dim % size:
        entries.append(None)
      else:
        entries.append(axes[0] if len(axes) == 1 else axes)
    out[path] = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(*entries))
  return out


def load_hf_checkpoint(path: str,
                       cfg: llm.LLMConfig | None = None,
                       *,
                       mesh: jax.sharding.Mesh | None = None,
                       rules: Any = None,
                       shardings: nnx.State | None = None,
                       **overrides: Any) -> llm.LLM:
  """Loads an HF checkpoint directory into a new `LLM`.

  Args:
    path: directory with config.json and *.safetensors.
    cfg: model config; default `load_hf_config(path, **overrides)`. Useful to
      pick dtype/param_dtype/scan_layers/remat_policy (or pass them as
      overrides).
    mesh: optional device mesh; each parameter is placed with the
      `NamedSharding` its logical axes get under `rules` (axes without a
      rule, or whose mesh axes do not divide them, are replicated).
    rules: logical axis rules (e.g. (('embed', 'fsdp'), ('mlp', 'tensor'))),
      used with `mesh`.
    shardings: alternatively, an `nnx.State` of shardings matching the
      model state (as from `nnx.get_named_sharding`). Without mesh and
      shardings parameters go to the default device.
    **overrides: `LLMConfig` fields replaced when `cfg` is None.

  A `cfg.vocab_size` above the checkpoint's grows the embedding (and untied
  output) table: each new row is the mean of the checkpoint's rows plus small
  noise (`recjax.text.tokenizer.resize_embedding_table`), e.g. for added special
  tokens.

  Returns:
    The model with the checkpoint's weights (stored in `cfg.param_dtype`).
  """
  if cfg is None:
    cfg = load_hf_config(path, **overrides)
  abstract = nnx.eval_shape(lambda: llm.LLM(cfg, rngs=nnx.Rngs(0)))
  graphdef, abstract_state = nnx.split(abstract)
  if shardings is not None:
    sharding_of = {p: v.get_value() if isinstance(v, nnx.Variable) else v
                   for p, v in nnx.to_flat_state(shardings)}
  elif mesh is not None:
    sharding_of = _shardings_for(abstract_state, mesh, rules)
  else:
    sharding_of = None

  rules_by_path = _rules(cfg)
  leaves = []
  with contextlib.ExitStack() as stack:
    reader = _TensorReader(path, stack)
    for var_path, var in nnx.to_flat_state(abstract_state):
      _check_no_lora(var_path)
      key, layer = _split_path(var_path)
      rule = rules_by_path[key]
      shape, dtype = var.shape, var.dtype
      if key == 'lm_head' and 'lm_head.weight' not in reader:
        raise KeyError('Untied config but the checkpoint has no lm_head.weight')
      if '{i}' not in rule.hf_name:
        host = np.ascontiguousarray(rule.to_ours(reader.get(rule.hf_name)),
                                    dtype=dtype)
      elif layer is not None:
        host = np.ascontiguousarray(
            rule.to_ours(reader.get(rule.hf_name.format(i=layer))), dtype=dtype)
      else:  # Scanned: stack the layers, one HF tensor at a time.
        host = np.empty(shape, dtype)
        for i in range(shape[0]):
          host[i] = rule.to_ours(reader.get(rule.hf_name.format(i=i)))
      if key in ('embedding', 'lm_head'):
        host = _grow_vocab(host, cfg.vocab_size, axis=0 if key == 'embedding' else 1)
      if host.shape != tuple(shape):
        raise ValueError(f'{var_path}: checkpoint shape {host.shape} != model '
                         f'shape {tuple(shape)}')
      if sharding_of is None:
        value = jax.device_put(host)
      else:
        value = jax.make_array_from_callback(
            host.shape, sharding_of[var_path], lambda idx, h=host: h[idx])
      del host
      leaves.append((var_path, var.replace(value)))
  return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def _grow_vocab(table: np.ndarray, vocab_size: int, axis: int) -> np.ndarray:
  """`table` with its vocabulary `axis` grown to `vocab_size` (never shrunk)."""
  if table.shape[axis] >= vocab_size:
    return table
  from recjax.text import tokenizer  # pylint: disable=g-import-not-at-top
  grown = tokenizer.resize_embedding_table(np.moveaxis(table, axis, 0), vocab_size)
  return np.ascontiguousarray(np.moveaxis(grown, 0, axis))


# ------------------------------------------------------------------------------
# Export.
# ------------------------------------------------------------------------------


def _to_host(x: jax.Array) -> np.ndarray:
  if not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


def _export_plan(model: llm.LLM) -> list[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]]:
  """(hf_name, shape, fetch) for every exported tensor, in HF order."""
  cfg = model.cfg
  rules_by_path = _rules(cfg)
  plan = []
  for var_path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    _check_no_lora(var_path)
    key, layer = _split_path(var_path)
    rule = rules_by_path[key]
    value = var.get_value()
    if '{i}' not in rule.hf_name:
      entries = [(rule.hf_name, lambda v=value: v)]
    elif layer is not None:
      entries = [(rule.hf_name.format(i=layer), lambda v=value: v)]
    else:
      entries = [(rule.hf_name.format(i=i), lambda v=value, i=i: v[i])
                 for i in range(value.shape[0])]
    for name, get in entries:
      shape = jax.eval_shape(lambda g=get, r=rule: r.to_hf(g())).shape
      plan.append((name, tuple(shape),
                   lambda g=get, r=rule: r.to_hf(_to_host(g()))))

  def order(entry):
    name = entry[0]
    parts = name.split('.')
    layer_idx = int(parts[2]) if name.startswith('model.layers.') else -1
    return (name.startswith('lm_head'), layer_idx, name)
  return sorted(plan, key=order)


def save_hf_checkpoint(model: llm.LLM,
                       path: str,
                       *,
                       dtype: str | None = None,
                       max_shard_size: int = 5 * 2**30) -> None:
  """Writes `model` as an HF checkpoint directory (config.json + safetensors).

  Args:
    model: the model; LoRA adapters must be merged first.
    path: output directory (created if needed).
    dtype: tensor dtype in the files ('bfloat16', 'float32', ...); default
      the parameter dtype, which makes import->export bitwise lossless.
    max_shard_size: bytes per safetensors file; larger models are split into
      model-0000k-of-0000n.safetensors with model.safetensors.index.json.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  cfg = model.cfg
  out_dtype = jnp.dtype(dtype or cfg.param_dtype)
  hf = hf_config_dict(cfg, torch_dtype=str(out_dtype))
  plan = _export_plan(model)
  shards: list[list[tuple[str, Callable[[], np.ndarray]]]] = [[]]
  size = 0
  for name, shape, fetch in plan:
    nbytes = int(np.prod(shape)) * out_dtype.itemsize
    if shards[-1] and size + nbytes > max_shard_size:
      shards.append([])
      size = 0
    shards[-1].append((name, fetch))
    size += nbytes

  write = jax.process_index() == 0
  if write:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, 'config.json'), 'w') as f:
      json.dump(hf, f, indent=2, sort_keys=True)
  n = len(shards)
  weight_map, total = {}, 0
  for k, shard in enumerate(shards):
    fname = ('model.safetensors' if n == 1 else
             f'model-{k + 1:05d}-of-{n:05d}.safetensors')
    tensors = {}
    for name, fetch in shard:
      tensors[name] = np.ascontiguousarray(fetch(), dtype=out_dtype)
      weight_map[name] = fname
      total += tensors[name].nbytes
    if write:
      save_file(tensors, os.path.join(path, fname), metadata={'format': 'pt'})
    del tensors
  if write and n > 1:
    with open(os.path.join(path, 'model.safetensors.index.json'), 'w') as f:
      json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map},
                f, indent=2, sort_keys=True)


def iter_hf_tensors(path: str) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (name, array) of every tensor in an HF checkpoint directory."""
  with contextlib.ExitStack() as stack:
    reader = _TensorReader(path, stack)
    for name in sorted(reader.weight_map):
      yield name, reader.get_raw(name)
