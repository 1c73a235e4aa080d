"""HF checkpoint import/export against `transformers` (PyTorch, CPU) on tiny random models."""
import json
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

from flax import nnx  # pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip('torch')
transformers = pytest.importorskip('transformers')

from recjax.models import decoding  # pylint: disable=g-import-not-at-top
from recjax.models import hf_checkpoint
from recjax.models import llm

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16)
HF_CONFIGS = {
    'llama': lambda: transformers.LlamaConfig(
        **COMMON, num_hidden_layers=2, attention_bias=True, mlp_bias=True,
        tie_word_embeddings=False, max_position_embeddings=64,
        rope_scaling={'rope_type': 'llama3', 'factor': 8.0,
                      'low_freq_factor': 1.0, 'high_freq_factor': 4.0,
                      'original_max_position_embeddings': 16}),
    'gemma': lambda: transformers.GemmaConfig(
        **{**COMMON, 'num_key_value_heads': 1}, num_hidden_layers=2),
    'gemma2': lambda: transformers.Gemma2Config(
        **COMMON, num_hidden_layers=2, sliding_window=4, query_pre_attn_scalar=24,
        attn_logit_softcapping=2.0, final_logit_softcapping=5.0),
    'gemma3': lambda: transformers.Gemma3TextConfig(
        **COMMON, num_hidden_layers=3, sliding_window=4, sliding_window_pattern=2,
        rope_theta=1e5, rope_local_base_freq=100.0,
        rope_scaling={'rope_type': 'linear', 'factor': 2.0}),
    'qwen2': lambda: transformers.Qwen2Config(
        **COMMON, num_hidden_layers=2, tie_word_embeddings=True),
    'qwen3': lambda: transformers.Qwen3Config(
        **COMMON, num_hidden_layers=2, tie_word_embeddings=False),
    # YaRN with a 16-token original context: scaling matters from position 16.
    'qwen2_yarn': lambda: transformers.Qwen2Config(
        **COMMON, num_hidden_layers=2, max_position_embeddings=64,
        rope_scaling={'rope_type': 'yarn', 'factor': 4.0,
                      'original_max_position_embeddings': 16}),
    'llama_yarn': lambda: transformers.LlamaConfig(
        **COMMON, num_hidden_layers=2, max_position_embeddings=48,
        rope_parameters={'rope_type': 'yarn', 'rope_theta': 100.0, 'factor': 3.0,
                         'original_max_position_embeddings': 16, 'beta_fast': 8,
                         'beta_slow': 0.25, 'truncate': False, 'mscale': 1.2,
                         'mscale_all_dim': 0.6}),
}
FAMILIES = sorted(HF_CONFIGS)


def _hf_model(family: str, dtype=torch.float32):
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[family]())
  gemma = family.startswith('gemma')
  with torch.no_grad():
    for name, p in model.named_parameters():
      # Random everything (biases and norms included), kept small enough that
      # the tied, sqrt(d)-scaled Gemma embeddings do not swamp the layers.
      std = 0.03 if (gemma and 'embed' in name) else 0.2
      base = 1.0 if name.endswith('norm.weight') and not gemma else 0.0
      p.copy_(base + std * torch.randn_like(p))
  model.generation_config.eos_token_id = None  # Generate exactly N tokens.
  model.generation_config.pad_token_id = 0
  return model.to(dtype).eval()


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
  """family -> (torch model, checkpoint dir)."""
  out = {}
  for family in FAMILIES:
    model = _hf_model(family)
    path = str(tmp_path_factory.mktemp(family))
    model.save_pretrained(path)
    out[family] = (model, path)
  return out


@pytest.fixture(scope='module')
def loaded(checkpoints):
  """family -> recjax LLM (float32) loaded from the HF checkpoint."""
  return {f: hf_checkpoint.load_hf_checkpoint(p, dtype='float32')
          for f, (_, p) in checkpoints.items()}


@pytest.fixture(scope='module')
def forward():
  return nnx.jit(lambda m, t: m(t).logits)


def _tokens(shape=(2, 12), seed=0):
  return np.random.RandomState(seed).randint(0, VOCAB, shape)


@pytest.mark.parametrize('family', FAMILIES)
def test_logits_match_transformers(family, checkpoints, loaded, forward):
  hf, _ = checkpoints[family]
  tokens = _tokens()
  with torch.no_grad():
    ref = hf(torch.tensor(tokens)).logits.numpy()
  with jax.default_matmul_precision('highest'):
    got = np.asarray(forward(loaded[family], jnp.asarray(tokens)))
  assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.parametrize('family', ['llama', 'llama_yarn', 'qwen2_yarn'])
def test_scaled_rope_matches_transformers_beyond_original_context(
    family, checkpoints, loaded, forward):
  hf, path = checkpoints[family]
  cfg = loaded[family].cfg
  assert cfg.rope_original_max_position == 16
  tokens = _tokens((2, 40))
  with torch.no_grad():
    ref = hf(torch.tensor(tokens)).logits.numpy()
  unscaled = hf_checkpoint.load_hf_checkpoint(path, dtype='float32',
                                              rope_scaling='default')
  with jax.default_matmul_precision('highest'):
    got = np.asarray(forward(loaded[family], jnp.asarray(tokens)))
    plain = np.asarray(forward(unscaled, jnp.asarray(tokens)))
  assert np.abs(got - ref).max() <= 1e-4
  assert np.abs(plain - ref)[:, 16:].max() > 1e-2  # The scaling matters here.


def test_yarn_config_mapping():
  cfg = hf_checkpoint.config_from_hf(HF_CONFIGS['llama_yarn']().to_dict())
  assert (cfg.rope_scaling, cfg.rope_scaling_factor, cfg.rope_beta_fast,
          cfg.rope_beta_slow, cfg.rope_truncate) == ('yarn', 3.0, 8.0, 0.25, False)
  mscale = lambda m: 0.1 * m * np.log(3.0) + 1.0
  assert cfg.rope_attention_scale == pytest.approx(mscale(1.2) / mscale(0.6))
  cfg = hf_checkpoint.config_from_hf(HF_CONFIGS['qwen2_yarn']().to_dict())
  assert cfg.rope_attention_factor is None
  assert cfg.rope_attention_scale == pytest.approx(0.1 * np.log(4.0) + 1.0)
  assert (cfg.rope_beta_fast, cfg.rope_beta_slow, cfg.rope_truncate) == (32.0, 1.0, True)
  # Old-style rope_scaling without factor: the max_position_embeddings ratio.
  hf = {**HF_CONFIGS['qwen2']().to_dict(), 'max_position_embeddings': 128,
        'rope_parameters': None, 'rope_theta': 1e4,
        'rope_scaling': {'type': 'yarn', 'original_max_position_embeddings': 32}}
  assert hf_checkpoint.config_from_hf(hf).rope_scaling_factor == 4.0
  hf['rope_scaling'] = {'rope_type': 'yarn', 'factor': 0.5}
  with pytest.raises(ValueError, match='factor > 1'):
    hf_checkpoint.config_from_hf(hf)
  explicit = llm.get_preset('tiny_qwen3', rope_scaling='yarn', rope_scaling_factor=2.0,
                            rope_original_max_position=16, rope_attention_factor=1.5)
  back = hf_checkpoint.config_from_hf(hf_checkpoint.hf_config_dict(explicit),
                                      dtype=explicit.dtype)
  assert back == explicit


@pytest.mark.parametrize('overrides, match', [
    (dict(rope_scaling_factor=1.0), 'factor > 1'),
    (dict(rope_scaling_factor=4.0, rope_beta_fast=1.0), 'rope_beta_fast > rope_beta_slow'),
    (dict(rope_scaling_factor=4.0, rope_attention_factor=0.0), 'must be > 0'),
])
def test_yarn_rejects_bad_values(overrides, match):
  with pytest.raises(ValueError, match=match):
    llm.LLMConfig(rope_scaling='yarn', **overrides)


@pytest.mark.parametrize('family', FAMILIES)
def test_greedy_generation_matches_transformers(family, checkpoints, loaded):
  hf, _ = checkpoints[family]
  prompts, lengths = decoding.left_pad([[5, 6, 7, 8, 9, 10], [11, 12, 13]])
  n = 8
  attention_mask = (np.arange(prompts.shape[1])[None] >=
                    (prompts.shape[1] - lengths)[:, None]).astype(np.int64)
  with torch.no_grad():
    ref = hf.generate(torch.tensor(prompts, dtype=torch.long),
                      attention_mask=torch.tensor(attention_mask),
                      do_sample=False, max_new_tokens=n)
  ref = ref[:, prompts.shape[1]:].numpy()
  with jax.default_matmul_precision('highest'):
    out = decoding.generate(loaded[family], prompts, lengths,
                            decoding.DecodeConfig(max_new_tokens=n))
  np.testing.assert_array_equal(np.asarray(out.tokens), ref)
  assert len(set(ref[0].tolist())) > 1  # Not a degenerate repetition.


@pytest.mark.parametrize('family', FAMILIES)
def test_export_roundtrip_is_bitwise(family, checkpoints, loaded, tmp_path):
  _, path = checkpoints[family]
  hf_checkpoint.save_hf_checkpoint(loaded[family], str(tmp_path))
  original = dict(hf_checkpoint.iter_hf_tensors(path))
  exported = dict(hf_checkpoint.iter_hf_tensors(str(tmp_path)))
  assert sorted(original) == sorted(exported)
  for name, tensor in original.items():
    assert exported[name].dtype == tensor.dtype, name
    assert exported[name].shape == tensor.shape, name
    assert exported[name].tobytes() == tensor.tobytes(), name
  cfg = hf_checkpoint.load_hf_config(str(tmp_path), dtype='float32')
  assert cfg == loaded[family].cfg


@pytest.mark.parametrize('family', ['gemma3', 'llama', 'llama_yarn', 'qwen2_yarn'])
def test_sharded_export_loads_in_transformers(family, checkpoints, loaded, tmp_path):
  hf, _ = checkpoints[family]
  hf_checkpoint.save_hf_checkpoint(loaded[family], str(tmp_path),
                                   max_shard_size=40_000)
  with open(tmp_path / 'model.safetensors.index.json') as f:
    assert len(set(json.load(f)['weight_map'].values())) > 1
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  tokens = torch.tensor(_tokens((2, 40)))
  with torch.no_grad():
    np.testing.assert_array_equal(reloaded(tokens).logits.numpy(),
                                  hf(tokens).logits.numpy())


def test_sharded_import_onto_a_mesh(checkpoints, loaded, tmp_path, forward):
  hf_checkpoint.save_hf_checkpoint(loaded['qwen3'], str(tmp_path),
                                   max_shard_size=40_000)
  devices = np.array(jax.devices()[:8]).reshape(2, 4)
  if devices.size < 8:
    pytest.skip('needs 8 devices')
  mesh = jax.sharding.Mesh(devices, ('fsdp', 'tensor'))
  rules = (('layers', None), ('embed', 'fsdp'), ('mlp', 'tensor'),
           ('heads', 'tensor'), ('kv_heads', None), ('head_dim', None),
           ('vocab', 'tensor'))
  model = hf_checkpoint.load_hf_checkpoint(str(tmp_path), mesh=mesh, rules=rules,
                                           dtype='float32')
  q = model.layers.attn.q_proj.kernel.get_value()
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, 'fsdp', 'tensor', None)
  assert len(q.addressable_shards) == 8
  hf, _ = checkpoints['qwen3']
  tokens = _tokens()
  with torch.no_grad():
    ref = hf(torch.tensor(tokens)).logits.numpy()
  with jax.default_matmul_precision('highest'):
    got = np.asarray(forward(model, jnp.asarray(tokens)))
  assert np.abs(got - ref).max() <= 1e-4


def test_bf16_checkpoint_roundtrip(tmp_path):
  src, dst = str(tmp_path / 'src'), str(tmp_path / 'dst')
  _hf_model('qwen3', dtype=torch.bfloat16).save_pretrained(src)
  model = hf_checkpoint.load_hf_checkpoint(src)  # float32 master weights.
  assert model.embedding.get_value().dtype == jnp.float32
  hf_checkpoint.save_hf_checkpoint(model, dst, dtype='bfloat16')
  original = dict(hf_checkpoint.iter_hf_tensors(src))
  exported = dict(hf_checkpoint.iter_hf_tensors(dst))
  assert sorted(original) == sorted(exported)
  for name, tensor in original.items():
    assert exported[name].dtype == tensor.dtype
    assert exported[name].tobytes() == tensor.tobytes(), name


def test_config_mapping_rejects_what_it_cannot_express():
  with pytest.raises(ValueError, match='Unsupported HF model_type'):
    hf_checkpoint.config_from_hf({'model_type': 'bert'})
  cfg = llm.get_preset('tiny_llama', qk_norm=True)
  with pytest.raises(ValueError, match='cannot express'):
    hf_checkpoint.hf_config_dict(cfg)
  for name in ('tiny_llama', 'tiny_gemma', 'tiny_gemma2', 'tiny_gemma3',
               'tiny_qwen2', 'tiny_qwen3', 'llama3_1_8b', 'gemma3_4b'):
    cfg = llm.get_preset(name)
    back = hf_checkpoint.config_from_hf(hf_checkpoint.hf_config_dict(cfg),
                                        dtype=cfg.dtype)
    assert back.local_layers == cfg.local_layers, name
    assert back.num_params() == cfg.num_params(), name


def test_extra_position_table_roundtrips(tmp_path):
  model = llm.create_model('tiny_llama', num_extra_positions=5)
  hf_checkpoint.save_hf_checkpoint(model, str(tmp_path))
  back = hf_checkpoint.load_hf_checkpoint(str(tmp_path))
  assert back.cfg.num_extra_positions == 5
  np.testing.assert_array_equal(back.extra_position_embedding.get_value(),
                                model.extra_position_embedding.get_value())
