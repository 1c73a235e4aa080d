"""LM training from an imported HF checkpoint against transformers.

The directory is named by `config.init_from.path`, or by the deprecated alias
`config.model.hf_checkpoint` (the same code path; both are tested).
"""
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from recjax.models import hf_checkpoint  # pylint: disable=g-import-not-at-top
from recjax.models import lora
from recjax.tasks import build_task
from recjax.train import sharding as shard_lib
from recjax.train import trainer
from tests.test_lm import tiny_config

STEPS = 3
MESH = dict(data=1, fsdp=2, tensor=2)
KEYS = ("init_from.path", "model.hf_checkpoint")


def _tokenizer_json(path, vocab_size: int = 300) -> int:
  """Writes a byte-level BPE tokenizer.json; returns its vocabulary size."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  from recjax.data.synthetic import make_synthetic  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  titles = make_synthetic(num_users=96, num_items=48, num_clusters=4, seed=0).item_text["title"]
  bpe = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<pad>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator([str(t) for t in titles[1:]] * 5, bpe)
  tok.save(os.path.join(path, "tokenizer.json"))
  return tok.get_vocab_size()


def _hf_checkpoint(path, vocab_size: int):
  """A random Llama (weights large enough to be far from uniform) saved with save_pretrained."""
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=8, tie_word_embeddings=False,
      max_position_embeddings=128))
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + 0.2 * torch.randn_like(p))
  model.eval().save_pretrained(path)
  return model


def _config(hf_dir, key: str = "init_from.path", **overrides):
  return tiny_config(**{key: str(hf_dir), "model.dtype": "float32",
                        "train.num_steps": STEPS, "eval.corpora": "items",
                        "mesh.data": MESH["data"], "mesh.fsdp": MESH["fsdp"],
                        "mesh.tensor": MESH["tensor"], **overrides})


def _run(config, workdir):
  return trainer.train_and_evaluate(config, build_task(config, str(workdir)), str(workdir),
                                    devices=jax.devices()[:4])


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """(directory, torch model): the tokenizer's ids plus recjax's specials fit its vocabulary."""
  path = tmp_path_factory.mktemp("hf")
  own = _tokenizer_json(path)
  return path, _hf_checkpoint(path, vocab_size=own + 20)


@pytest.fixture(scope="module")
def full_run(hf_dir, tmp_path_factory):
  return _run(_config(hf_dir[0], **{"train.num_steps": 2 * STEPS}),
              tmp_path_factory.mktemp("full"))


def _transformers_loss(model, batch) -> float:
  """Mean next-token loss of every document of a packed batch, run alone through `model`."""
  nll, count = 0.0, 0
  for tokens, segments in zip(batch["tokens"], batch["segment_ids"]):
    for segment in set(segments[segments > 0].tolist()):
      doc = torch.tensor(tokens[segments == segment][None].astype(np.int64))
      with torch.no_grad():
        logits = model(doc).logits[0, :-1].double()
      nll += float(torch.nn.functional.cross_entropy(logits, doc[0, 1:], reduction="sum"))
      count += doc.shape[1] - 1
  return nll / count


def test_first_step_loss_matches_transformers_and_training_moves_the_weights(hf_dir, full_run,
                                                                             tmp_path):
  path, hf = hf_dir
  config = _config(path)
  task = build_task(config, str(tmp_path))
  assert task.model_config.vocab_size == hf.config.vocab_size  # no new rows needed
  assert config.text.tokenizer == str(path / "tokenizer.json")
  assert task.model_config.hidden_size == 32  # the checkpoint's, not tiny_config's overrides
  batch = next(iter(task.train_data(0, 1)))
  assert full_run.losses[0] == pytest.approx(_transformers_loss(hf, batch), abs=1e-4)
  imported = hf_checkpoint.load_hf_checkpoint(str(path), task.model_config)
  before = dict(nnx.to_flat_state(nnx.state(imported, nnx.Param)))
  after = nnx.to_flat_state(nnx.state(full_run.train_state.model(), nnx.Param))
  for key, value in after:
    assert not np.allclose(np.asarray(value.get_value()), before[key].get_value()), key


def test_the_deprecated_alias_builds_the_same_task(hf_dir, tmp_path):
  tasks = [build_task(_config(hf_dir[0], key), str(tmp_path / key)) for key in KEYS]
  assert tasks[0].hf_dir == tasks[1].hf_dir == str(hf_dir[0])
  assert tasks[0].model_config == tasks[1].model_config
  assert tasks[0].config.text.tokenizer == tasks[1].config.text.tokenizer
  # Both keys naming different directories is ambiguous.
  config = _config(hf_dir[0], "model.hf_checkpoint", **{"init_from.path": str(tmp_path)})
  with pytest.raises(ValueError, match="name two starting points"):
    build_task(config, str(tmp_path / "run"))


@pytest.mark.parametrize("key", KEYS)
def test_resume_restores_the_checkpoint_not_the_hf_weights(hf_dir, full_run, tmp_path, key):
  hf_copy = tmp_path / "hf"
  shutil.copytree(hf_dir[0], hf_copy)
  workdir = tmp_path / "run"
  first = _run(_config(hf_copy, key), workdir)
  os.remove(hf_copy / "model.safetensors")  # a resumed run must not need the weights
  second = _run(_config(hf_copy, key, **{"train.num_steps": 2 * STEPS}), workdir)
  assert first.step == STEPS and second.step == 2 * STEPS
  assert first.losses + second.losses == full_run.losses  # bitwise, every step
  with pytest.raises(FileNotFoundError, match="safetensors"):  # a fresh run needs them
    _run(_config(hf_copy, key), tmp_path / "fresh")


def test_new_rows_for_special_tokens_and_lora(tmp_path):
  own = _tokenizer_json(tmp_path)
  hf = _hf_checkpoint(tmp_path, vocab_size=own)  # recjax's special tokens do not fit
  config = _config(tmp_path, "model.hf_checkpoint", **{"model.lora.rank": 4})
  task = build_task(config, str(tmp_path / "run"))
  assert task.model_config.vocab_size == -(-task.tokenizer.vocab_size // 64) * 64 > own
  mesh = shard_lib.make_mesh(config.mesh, jax.devices()[:4])
  state = trainer.create_train_state(config, task, mesh)
  assert trainer.init_from_pretrained(task, state)
  model = state.model()
  embedding = np.asarray(model.embedding.get_value())
  np.testing.assert_array_equal(embedding[:own], hf.model.embed_tokens.weight.detach().numpy())
  np.testing.assert_array_equal(np.asarray(model.lm_head.get_value())[:, :own],
                                hf.lm_head.weight.detach().numpy().T)
  assert np.all(np.isfinite(embedding[own:])) and np.abs(embedding[own:]).max() > 0
  assert model.embedding.get_value().sharding == state.shardings[0]["embedding"].get_value()
  assert nnx.state(model, lora.LoRAParam)  # adapters kept (lora_b zero: same function)


def test_clear_errors(tmp_path):
  alias = "model.hf_checkpoint"
  with pytest.raises(FileNotFoundError, match="is not a directory"):
    build_task(_config(tmp_path / "missing", alias), str(tmp_path / "run"))
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    build_task(_config(tmp_path, alias), str(tmp_path / "run"))
  own = _tokenizer_json(tmp_path)
  _hf_checkpoint(tmp_path, vocab_size=own - 10)
  for key in KEYS:
    with pytest.raises(ValueError, match=f"defines {own} ids but the checkpoint"):
      build_task(_config(tmp_path, key), str(tmp_path / "run"))
  os.remove(tmp_path / "tokenizer.json")
  for key in KEYS:
    with pytest.raises(FileNotFoundError, match=f"config.{key}=.* has no tokenizer.json"):
      build_task(_config(tmp_path, key), str(tmp_path / "run"))
