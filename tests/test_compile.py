"""recjax.compile: AOT compilation of the real LM train step for a TPU topology (libtpu, no TPU)."""
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from recjax import compile as compile_lib
from tests.cli_utils import REPO

_spec = importlib.util.spec_from_file_location("lm_config", REPO / "configs" / "lm.py")
lm_config = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lm_config)

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
needs_libtpu = pytest.mark.skipif(
    not HAS_LIBTPU, reason="libtpu is not installed (pip install -e '.[tpu]', ~700 MB)")


def test_parse_topology_cloud_and_libtpu_names():
  assert compile_lib.parse_topology("v5p-16").name == "v5p:2x2x2"  # 16 TensorCores = 8 chips
  assert compile_lib.parse_topology("v4-32").shape == (2, 2, 4)
  assert compile_lib.parse_topology("v5e-16").name == "v5e:4x4"    # v5e names count chips
  assert compile_lib.parse_topology("v6e-256").num_chips == 256
  assert compile_lib.parse_topology("v5p:2x4x4").num_chips == 32


@pytest.mark.parametrize("name, message", [
    ("v7x-8", "not a TPU topology"),
    ("v5p-12", "not a known TPU v5p slice"),
    ("v5e:2x2x2", "2 dimensions"),
])
def test_parse_topology_rejects_unknown_names(name, message):
  with pytest.raises(ValueError, match=message):
    compile_lib.parse_topology(name)


def test_count_collectives_reads_compiled_hlo():
  """An fsdp-style all-gather and a psum, compiled on the 8 CPU devices."""
  mesh = jax.make_mesh((8,), ("fsdp",), devices=jax.devices()[:8])
  sharded = NamedSharding(mesh, PartitionSpec("fsdp"))
  replicated = NamedSharding(mesh, PartitionSpec())
  f = jax.jit(lambda w, x: (w @ x).sum(), in_shardings=(sharded, replicated),
              out_shardings=replicated)
  x = jax.ShapeDtypeStruct((64, 32), jnp.float32)
  text = f.lower(jax.ShapeDtypeStruct((64, 64), jnp.float32), x).compile().as_text()
  counts = compile_lib.count_collectives(text, 8)
  assert sum(c.count for c in counts.values()) >= 1
  assert all(c.bytes >= 0 and c.ici_bytes >= 0 for c in counts.values())


def _reduced_qwen3_8b(fsdp: int):
  """configs/lm.py with qwen3_8b's width and vocabulary, 2 layers, 4 x 128 tokens per chip."""
  config = lm_config.get_config()
  config.lm.tokenizer_vocab_size = 0
  config.text.tokenizer = "byte"  # no tokenizer training
  config.model.preset = "qwen3_8b"
  config.model.vocab_size = 151936
  config.model.dtype = ""  # the preset's bfloat16
  # Unrolled: XLA's cost analysis counts a scanned layer loop's body once.
  config.model.overrides = dict(num_layers=2, scan_layers=False)
  config.text.seq_len = 128
  config.train.batch_size = 4 * fsdp
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, fsdp, 1
  return config


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  config = _reduced_qwen3_8b(fsdp=4)
  topology = compile_lib.parse_topology("v5p-8")
  reports, batch = compile_lib.compile_experiment(config, topology,
                                                  str(tmp_path_factory.mktemp("work")))
  return config, topology, reports, batch


@needs_libtpu
def test_train_step_memory_flops_and_fsdp_collectives(compiled):
  config, topology, (train, evaluate), batch = compiled
  from recjax.models import llm  # pylint: disable=g-import-not-at-top
  cfg = llm.get_preset("qwen3_8b", num_layers=2, vocab_size=151936)
  chips = topology.num_chips
  # Arguments: float32 parameters + AdamW's two moments, split over the 4 fsdp chips.
  expected_args = 3 * 4 * cfg.num_params() / chips
  assert 0.95 * expected_args < train.argument_bytes < 1.1 * expected_args
  assert train.temp_bytes > 0 and train.code_bytes > 0
  # The new state is written into the donated old one.
  assert train.alias_bytes > 0.9 * expected_args
  assert train.total_bytes == (train.argument_bytes + train.output_bytes - train.alias_bytes +
                               train.temp_bytes + train.code_bytes)
  assert compile_lib.fit_error(train, topology.chip) is None
  # FLOPs per chip: XLA's count of the compiled step against the analytic model FLOPs
  # (~6 x parameters in matmuls x tokens; the embedding lookup is no matmul).
  tokens = int(np.prod(batch["tokens"].shape)) / chips
  matmul_params = cfg.num_params() - cfg.vocab_size * cfg.hidden_size
  assert train.model_flops == pytest.approx(6 * matmul_params * tokens, rel=0.05)
  assert 0.95 < train.flops / train.model_flops < 1.15
  # fsdp: each layer's weights all-gathered, their gradients reduce-scattered (libtpu writes a
  # reduce-scatter as an all-reduce-scatter fusion; count_collectives reads it as one).
  assert train.collectives["all-gather"].count > 0
  assert train.collectives["reduce-scatter"].count > 0
  # The eval forward pass: about a third of the train step's FLOPs, fewer temporaries.
  assert 0.25 < evaluate.flops / train.flops < 0.45
  assert evaluate.temp_bytes < train.temp_bytes
  text = compile_lib.format_report(train, topology.chip, int(tokens))
  assert "roofline ESTIMATE on TPU v5p" in text and "MFU <=" in text


@needs_libtpu
def test_step_that_does_not_fit_names_the_knobs(compiled):
  _, topology, (train, _), _ = compiled
  small = compile_lib.Chip("TPU test", "v5p", 1e12, train.total_bytes / 2, 1e12, None, 2, 3)
  error = compile_lib.fit_error(train, small)
  assert error and "more than" in error and "mesh.fsdp" in error and "remat_policy" in error


@needs_libtpu
def test_mesh_that_does_not_divide_the_topology(tmp_path):
  config = _reduced_qwen3_8b(fsdp=3)
  with pytest.raises(ValueError, match="topology v5p:2x2x1 has 4 chips"):
    compile_lib.compile_experiment(config, compile_lib.parse_topology("v5p-8"), str(tmp_path))
