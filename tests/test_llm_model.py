"""Tests of the LLM backbone itself: presets, masks, cache, scan vs loop, remat, sharding names."""
import dataclasses
import os

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.models import llm

B, T = 2, 10


def _tokens(seed=0, shape=(B, T), vocab=256):
  return jnp.asarray(np.random.RandomState(seed).randint(1, vocab, shape), jnp.int32)


def _to_loop(scan_model: llm.LLM) -> llm.LLM:
  """The same weights in a model with a Python list of layers."""
  cfg = dataclasses.replace(scan_model.cfg, scan_layers=False)
  loop = llm.LLM(cfg, rngs=nnx.Rngs(1))
  flat = []
  for path, var in nnx.to_flat_state(nnx.state(scan_model)):
    if path[0] == 'layers':
      for i in range(cfg.num_layers):
        flat.append((('layers', i) + path[1:], var.get_value()[i]))
    else:
      flat.append((path, var.get_value()))
  nnx.update(loop, nnx.from_flat_state(flat))
  return loop


@pytest.fixture(scope='module')
def gemma3():
  """Local + global layers, QK-norm, local RoPE base, post-norms."""
  return llm.create_model('tiny_gemma3', seed=0, initializer_range=0.2)


@pytest.fixture(scope='module')
def llama():
  return llm.create_model('tiny_llama', seed=0, initializer_range=0.2)


@pytest.fixture(scope='module')
def forward():
  return nnx.jit(lambda m, tokens, **kw: m(tokens, **kw),
                 static_argnames=('attention_mask_kind', 'return_hidden'))


def test_presets_parse_and_sizes():
  names = sorted(f[:-4] for f in os.listdir(llm.GIN_DIR) if f.endswith('.gin'))
  for name in ('llama3_8b', 'qwen3_0_6b', 'gemma2_2b', 'tiny_llama'):
    assert name in names
  cfgs = {n: llm.get_preset(n) for n in names}
  assert cfgs['llama3_8b'].num_params() == pytest.approx(8.03e9, rel=0.01)
  assert cfgs['qwen3_0_6b'].num_params() == pytest.approx(0.596e9, rel=0.01)
  assert cfgs['gemma2_2b'].num_params() == pytest.approx(2.61e9, rel=0.01)
  assert cfgs['gemma2_2b'].local_layers[:4] == (True, False, True, False)
  assert sum(cfgs['gemma3_1b'].local_layers) == 22
  assert cfgs['llama3_8b'].dtype == 'bfloat16'
  assert llm.get_preset('tiny_llama', num_layers=3).num_layers == 3
  with pytest.raises(ValueError, match='No preset'):
    llm.get_preset('no_such_model')


def test_logical_axes_and_partition_specs():
  model = llm.create_model('tiny_qwen3')
  state = nnx.state(model)
  names = {'vocab', 'embed', 'mlp', 'heads', 'kv_heads', 'head_dim', 'layers', None}
  for path, var in nnx.to_flat_state(state):
    axes = var.get_metadata()['out_sharding']
    assert len(axes) == var.get_value().ndim, path
    assert set(axes) <= names, (path, axes)
  rules = [('layers', None), ('embed', 'fsdp'), ('mlp', 'tensor'),
           ('heads', 'tensor'), ('kv_heads', 'tensor'), ('vocab', 'tensor'),
           ('head_dim', None)]
  with nnx.logical_axis_rules(rules):
    specs = nnx.get_partition_spec(state)
  q = specs['layers']['attn']['q_proj']['kernel'].get_value()
  assert q == jax.sharding.PartitionSpec(None, 'fsdp', 'tensor', None)
  assert specs['lm_head'].get_value() == jax.sharding.PartitionSpec('fsdp', 'tensor')


def test_bf16_compute_fp32_params(forward):
  model = llm.create_model('tiny_llama', dtype='bfloat16')
  assert model.embedding.get_value().dtype == jnp.float32
  out = forward(model, _tokens())
  assert out.logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(out.logits)).all()


def test_scan_equals_loop(gemma3, forward):
  tokens = _tokens(1)
  loop = _to_loop(gemma3)
  np.testing.assert_allclose(forward(gemma3, tokens).logits,
                             forward(loop, tokens).logits, atol=1e-5)
  h_scan = forward(gemma3, tokens, return_hidden=1).hidden
  h_loop = forward(loop, tokens, return_hidden=1).hidden
  np.testing.assert_allclose(h_scan, h_loop, atol=1e-5)
  # The loop model's cache holds one array per layer (written in place), the
  # scan model's one stacked array; both decode the same, a reordered cache too.
  cache = llm.KVCache.create(loop.cfg, B, T)
  assert isinstance(cache.k, tuple) and len(cache.k) == loop.cfg.num_layers
  assert llm.KVCache.create(gemma3.cfg, B, T).k.shape[0] == gemma3.cfg.num_layers
  rows = jnp.asarray([1, 0])
  for model in (loop, gemma3):
    out = forward(model, tokens[:, :6], cache=llm.KVCache.create(model.cfg, B, T))
    assert out.cache.max_len == T and isinstance(out.cache.k, tuple) == (model is loop)
    rest = forward(model, tokens[:, 6:], cache=out.cache)
    np.testing.assert_allclose(rest.logits, forward(model, tokens).logits[:, 6:],
                               atol=1e-5)
    swapped = forward(model, tokens[rows, 6:], cache=out.cache.gather(rows))
    np.testing.assert_allclose(swapped.logits, rest.logits[rows], atol=1e-5)


def test_kv_cache_chunks_match_full_forward(gemma3, forward):
  # 14 tokens > sliding window 8, so local layers really drop old keys.
  tokens = _tokens(2, (B, 14))
  full = forward(gemma3, tokens).logits
  step = nnx.jit(lambda m, t, c: m(t, cache=c))
  cache = llm.KVCache.create(gemma3.cfg, B, 16)
  out = step(gemma3, tokens[:, :5], cache)
  got = [out.logits]
  for i in range(5, 14):
    out = step(gemma3, tokens[:, i:i + 1], out.cache)
    got.append(out.logits)
  np.testing.assert_allclose(jnp.concatenate(got, 1), full, atol=1e-4)
  assert int(out.cache.index) == 14


def test_return_hidden(gemma3, forward):
  tokens = _tokens(3)
  out = forward(gemma3, tokens, return_hidden=True)
  np.testing.assert_allclose(gemma3.logits(out.hidden), out.logits, atol=1e-5)
  last = forward(gemma3, tokens, return_hidden=-1).hidden
  np.testing.assert_allclose(gemma3.logits(gemma3.final_norm(last)), out.logits,
                             atol=1e-5)
  first = forward(gemma3, tokens, return_hidden=0).hidden
  assert not np.allclose(first, last)


def test_packed_segments_equal_separate_sequences(gemma3, forward):
  a, b = _tokens(4, (1, 6)), _tokens(5, (1, 4))
  packed = jnp.concatenate([a, b], 1)
  segment_ids = jnp.array([[1] * 6 + [2] * 4])
  positions = jnp.array([list(range(6)) + list(range(4))])
  out = forward(gemma3, packed, positions=positions, segment_ids=segment_ids)
  np.testing.assert_allclose(out.logits[:, :6], forward(gemma3, a).logits, atol=1e-5)
  np.testing.assert_allclose(out.logits[:, 6:], forward(gemma3, b).logits, atol=1e-5)


def test_prefix_lm_mask(llama, forward):
  model = llama
  tokens = _tokens(6)
  prefix = jnp.array([4, 7])
  run = lambda t, p: forward(model, t, attention_mask_kind='prefix',
                             prefix_lengths=p).logits
  base = run(tokens, prefix)
  # A prefix token is seen by every earlier position of the prefix...
  changed = run(tokens.at[:, 3].set(9), prefix)
  assert not np.allclose(changed[0, 0], base[0, 0])
  # ...but a token after the prefix is not.
  changed = run(tokens.at[0, 4].set(9), prefix)
  np.testing.assert_allclose(changed[0, :4], base[0, :4], atol=1e-6)
  assert not np.allclose(changed[0, 5], base[0, 5])
  # Empty prefixes are plain causal attention.
  np.testing.assert_allclose(run(tokens, jnp.zeros(2, jnp.int32)),
                             forward(model, tokens).logits, atol=1e-5)


def test_packed_rows_with_per_example_prefixes(llama, forward):
  # GLM rows pack several examples, each with its own bidirectional Part A.
  a, b = _tokens(7, (1, 6)), _tokens(8, (1, 5))
  packed = jnp.concatenate([a, b], 1)
  segment_ids = jnp.array([[1] * 6 + [2] * 5])
  positions = jnp.array([list(range(6)) + list(range(5))])
  prefix_mask = jnp.array([[True] * 3 + [False] * 3 + [True] * 2 + [False] * 3])
  out = forward(llama, packed, positions=positions, segment_ids=segment_ids,
                attention_mask_kind='prefix', prefix_mask=prefix_mask).logits
  alone = lambda t, n: forward(llama, t, attention_mask_kind='prefix',
                               prefix_lengths=jnp.array([n])).logits
  np.testing.assert_allclose(out[:, :6], alone(a, 3), atol=1e-5)
  np.testing.assert_allclose(out[:, 6:], alone(b, 2), atol=1e-5)
  # The prefix really is bidirectional (the test can fail): causal differs.
  assert not np.allclose(out[:, :6], forward(llama, a).logits, atol=1e-4)
  with pytest.raises(ValueError, match='one of prefix_lengths and prefix_mask'):
    forward(llama, packed, attention_mask_kind='prefix')


def test_prefix_lm_mask_with_cache(llama, forward):
  tokens = _tokens(10)
  prefix = jnp.array([4, 6])
  full = forward(llama, tokens, attention_mask_kind='prefix',
                 prefix_lengths=prefix).logits
  cache = llm.KVCache.create(llama.cfg, B, T)
  out = forward(llama, tokens[:, :6], attention_mask_kind='prefix',
                prefix_lengths=prefix, cache=cache)
  rest = forward(llama, tokens[:, 6:], cache=out.cache)
  np.testing.assert_allclose(jnp.concatenate([out.logits, rest.logits], 1), full,
                             atol=1e-5)


def test_softcap_path_matches_dot_product_attention(forward):
  cfg = llm.get_preset('tiny_gemma2', initializer_range=0.2, attn_logit_softcap=None)
  plain = llm.LLM(cfg, rngs=nnx.Rngs(0))
  capped = llm.LLM(dataclasses.replace(cfg, attn_logit_softcap=1e7),
                   rngs=nnx.Rngs(0))
  tokens = _tokens(7)
  seg = jnp.array([[1] * 6 + [2] * 4, [1] * 10])
  for kw in ({}, {'segment_ids': seg}):
    np.testing.assert_allclose(forward(plain, tokens, **kw).logits,
                               forward(capped, tokens, **kw).logits, atol=1e-5)


def test_extra_positions(forward):
  model = llm.create_model('tiny_llama', num_extra_positions=8)
  assert model.extra_position_embedding.get_value().shape == (8, 64)
  tokens = _tokens(8)
  a = forward(model, tokens, extra_positions=jnp.zeros_like(tokens)).logits
  b = forward(model, tokens, extra_positions=jnp.ones_like(tokens)).logits
  assert not np.allclose(a, b)


@pytest.mark.parametrize('policy', ['full', 'dots_saveable'])
def test_remat_keeps_gradients(policy):
  cfg = llm.get_preset('tiny_llama', initializer_range=0.2)
  tokens = _tokens(9)

  def grads(cfg):
    model = llm.LLM(cfg, rngs=nnx.Rngs(0))
    loss = lambda m: jnp.mean(m(tokens).logits ** 2)
    return nnx.state(nnx.jit(nnx.grad(loss))(model))

  ref, got = grads(cfg), grads(dataclasses.replace(cfg, remat_policy=policy))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ref, got)


def test_residual_stream_is_pinned_to_the_batch_axes():
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  from recjax.models import layers  # pylint: disable=g-import-not-at-top
  from recjax.train import sharding as shard_lib  # pylint: disable=g-import-not-at-top
  assert layers.BATCH_AXES == shard_lib.BATCH_AXES
  mesh = shard_lib.make_mesh(dict(data=2, fsdp=2, tensor=2), jax.devices()[:8])
  replicated = NamedSharding(mesh, PartitionSpec())
  f = jax.jit(lambda x: layers.constrain_batch(x * 2), in_shardings=replicated)
  with jax.set_mesh(mesh):
    pinned = f(jnp.ones((8, 3, 4)))
    odd = f(jnp.ones((6, 3, 4)))  # 6 rows do not divide over data x fsdp = 4: left alone
  assert pinned.sharding.is_equivalent_to(
      NamedSharding(mesh, PartitionSpec(("data", "fsdp"))), 3)
  assert odd.sharding.is_equivalent_to(replicated, 3)
  np.testing.assert_array_equal(np.asarray(pinned), 2.0)
  x = jnp.ones((8, 3, 4))
  assert layers.constrain_batch(x) is x  # no mesh: nothing to pin
