"""Item-text embeddings by a language model (`embed.method="lm"`) for semantic IDs.

Against transformers: a tiny random Llama saved with save_pretrained and a tokenizer.json. The
recjax path (`recjax.eval.calrec.embed_rows` with `return_hidden=True`) pools the final-normed
hidden states, which is what transformers returns as `hidden_states[-1]` (LlamaModel applies
the final norm before appending the last entry), so the reference is torch's
`output_hidden_states[-1]` mean-pooled over the text's tokens (not BOS), L2-normalised.
Then a recjax lm workdir trained for two steps feeds the rqvae task end to end, and bad
`embed.lm_path` values fail with errors naming the key and the path.
"""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np
import pytest

from recjax.curriculum import embeddings
from recjax.tasks import build_task
from recjax.tasks.semantic_ids import load_semantic_ids
from recjax.train import trainer
from tests.cli_utils import config_file
from tests.test_lm import tiny_config as tiny_lm_config

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ONE = jax.devices()[:1]
MAX_LEN = 12
TEXTS = ["red pen", "a blue stapler for the office desk", "",
         "an extremely long catalogue title that certainly runs past the maximum length",
         "pen"]


def _tokenizer_json(path):
  """A byte-level BPE tokenizer.json with <s>, </s> and <pad>."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  bpe = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<pad>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(TEXTS * 5, bpe)
  tok.save(os.path.join(path, "tokenizer.json"))
  return tok


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  """(directory, torch model, tokenizers.Tokenizer) of a random 2-layer Llama."""
  path = tmp_path_factory.mktemp("hf")
  tok = _tokenizer_json(path)
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64,
      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
      tie_word_embeddings=False, max_position_embeddings=128))
  with torch.no_grad():  # weights far from the tiny init, so the layers matter
    for name, p in model.named_parameters():
      p.copy_((1.0 if name.endswith("norm.weight") else 0.0) + 0.2 * torch.randn_like(p))
  model.eval().save_pretrained(path)
  return path, model, tok


def _torch_reference(model, tok, texts, max_len):
  bos = tok.token_to_id("<s>")
  out = []
  for text in texts:
    ids = ([bos] + tok.encode(text, add_special_tokens=False).ids)[:max_len]
    with torch.no_grad():
      hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
    row = hidden[1:].mean(0).numpy() if len(ids) > 1 else np.zeros(hidden.shape[-1])
    out.append(row / max(np.linalg.norm(row), 1e-30) if np.any(row) else row)
  return np.stack(out).astype(np.float32)


def test_hf_checkpoint_matches_transformers(hf_dir):
  path, model, tok = hf_dir
  # Five texts in batches of two: the last batch is padded with an empty row.
  got = embeddings.embed_texts(TEXTS, "lm", lm_path=str(path), max_len=MAX_LEN, batch_size=2)
  want = _torch_reference(model, tok, TEXTS, MAX_LEN)
  assert got.shape == (len(TEXTS), 32) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, atol=1e-5)
  norms = np.linalg.norm(got, axis=1)
  np.testing.assert_allclose(norms[[0, 1, 3, 4]], 1.0, atol=1e-6)
  assert norms[2] == 0.0  # no token after BOS: the zero vector
  # The truncated text pools its first MAX_LEN - 1 tokens only.
  assert len(tok.encode(TEXTS[3], add_special_tokens=False).ids) > MAX_LEN


def test_padding_does_not_change_an_embedding(hf_dir):
  path, _, _ = hf_dir
  alone = embeddings.lm_embed(["pen"], str(path), max_len=64, batch_size=4)
  batched = embeddings.lm_embed(["pen", TEXTS[1], TEXTS[3] * 2], str(path), max_len=64,
                                batch_size=4)
  np.testing.assert_allclose(alone[0], batched[0], atol=1e-6)


@pytest.fixture(scope="module")
def lm_workdir(tmp_path_factory):
  """A tiny recjax lm run (byte tokens, 2 x 32 wide), two steps, checkpointed at the end."""
  workdir = tmp_path_factory.mktemp("lm")
  config = tiny_lm_config(**{"train.num_steps": 2, "train.checkpoint_every_steps": 2,
                             "eval.corpora": "items", "eval.max_documents": 8})
  trainer.train_and_evaluate(config, build_task(config, str(workdir)), str(workdir),
                             devices=ONE)
  return workdir


def _rqvae_config(**overrides):
  return config_file("semantic_ids", "rqvae,synthetic", {
      "data.dataset": {"name": "synthetic", "num_users": 100, "num_items": 150,
                       "num_clusters": 5, "seed": 0},
      "embed.method": "lm", "embed.max_len": 64, "embed.batch_size": 64,
      "model.encoder_widths": (32,), "model.latent_dim": 8, "model.levels": 2,
      "model.codebook_size": 8, "model.kmeans_iters": 10, "train.batch_size": 50,
      "train.num_steps": 10, "train.log_every_steps": 5, "train.eval_every_steps": 0,
      "train.checkpoint_every_steps": 0, "train.progress_bar": False,
      "train.async_checkpointing": False, "data.num_threads": 0,
      "eval.rq_kmeans_baseline": False, **overrides})


def test_rqvae_on_a_recjax_lm_workdir(lm_workdir, tmp_path):
  config = _rqvae_config(**{"embed.lm_path": str(lm_workdir)})
  task = build_task(config, str(tmp_path))
  assert task.embeddings.shape == (150, 32)  # the LM's hidden size
  np.testing.assert_allclose(np.linalg.norm(task.embeddings, axis=1), 1.0, atol=1e-5)
  trainer.train_and_evaluate(config, task, str(tmp_path), devices=ONE)
  ids = load_semantic_ids(str(tmp_path))
  assert ids.num_items == 150
  assert len(set(ids.tokens()[1:])) == 150  # every item its own code


def test_bad_lm_paths_name_the_key_and_the_path(tmp_path, hf_dir):
  with pytest.raises(ValueError, match=r"config\.embed\.lm_path is empty"):
    build_task(_rqvae_config(), None)  # fails before any data is read
  missing = tmp_path / "nowhere"
  with pytest.raises(ValueError, match=rf"config\.embed\.lm_path='{missing}' is not a directory"):
    build_task(_rqvae_config(**{"embed.lm_path": str(missing)}), None)
  other = tmp_path / "other"
  other.mkdir()
  (other / "notes.txt").write_text("not a model")
  with pytest.raises(ValueError, match=rf"lm_path='{other}' is neither a recjax workdir .* no "
                     r"config\.json, tokenizer\.json, \*\.safetensors"):
    embeddings.embed_texts(TEXTS, "lm", lm_path=str(other))
  half = tmp_path / "half_hf"  # config.json and weights, no tokenizer.json
  half.mkdir()
  for name in ("config.json", "model.safetensors"):
    (half / name).write_bytes((hf_dir[0] / name).read_bytes())
  with pytest.raises(ValueError, match=rf"lm_path='{half}' .* has no tokenizer\.json$"):
    embeddings.lm_embed(TEXTS, str(half))
  quantiser = tmp_path / "rqvae"  # a recjax workdir, but not of a language model
  quantiser.mkdir()
  (quantiser / "config.json").write_text(json.dumps({"task": "rqvae"}))
  with pytest.raises(ValueError, match=rf"lm_path='{quantiser}': a workdir of task 'rqvae', "
                     "not of a language model"):
    embeddings.lm_embed(TEXTS, str(quantiser))
