"""Tokenizers: offsets, special tokens, SentencePiece training/CLI, HF tokenizer.json, resizing."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

from recjax.text import tokenizer as tokenizer_lib
from recjax.data.synthetic import make_synthetic
from tests.datasets import require_data_dir

TEXTS = [
    "Given the following purchase history of user_12: Red Pen; Blue Pencil, predict the next.",
    "Below are the items a user bought on Amazon Office Products, oldest first.",
    "Item 1: VTech DECT 6.0 Cordless Phone, White/Grey; Brand: VTech",
    "Caf\u00e9 cr\u00e8me, na\u00efve r\u00e9sum\u00e9 \u2014 \u201cquoted\u201d text \U0001F642 and 12345.",
]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  data = make_synthetic(num_users=50, num_items=300, num_clusters=10, seed=0)
  texts = [str(t) for t in data.item_text["title"][1:]] + TEXTS * 20
  out = tmp_path_factory.mktemp("sp") / "toy"
  return tokenizer_lib.train_sentencepiece(texts, out, vocab_size=600)


@pytest.fixture(scope="module")
def hf_json(tmp_path_factory):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<pad>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(TEXTS * 30, trainer)
  path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
  tok.save(str(path))
  return path


def _all_tokenizers(sp_model, hf_json):
  return {"byte": tokenizer_lib.ByteTokenizer(),
          "sentencepiece": tokenizer_lib.SentencePieceTokenizer(sp_model),
          "hf": tokenizer_lib.HFTokenizer(hf_json)}


def _check_offsets(tok, text):
  enc = tok.encode(text, add_bos=True, add_eos=True)
  assert enc.ids.dtype == np.int32 and enc.offsets.shape == (len(enc.ids), 2)
  assert tuple(enc.offsets[0]) == (0, 0) and enc.ids[0] == tok.bos_id
  assert tuple(enc.offsets[-1]) == (len(text), len(text)) and enc.ids[-1] == tok.eos_id
  starts, ends = enc.offsets[1:-1, 0], enc.offsets[1:-1, 1]
  assert np.all(starts <= ends) and np.all(np.diff(starts) >= 0) and np.all(np.diff(ends) >= 0)
  assert np.all((0 <= starts) & (ends <= len(text)))
  # Every non-space character is covered by some token.
  covered = np.zeros(len(text), bool)
  for s, e in zip(starts, ends):
    covered[s:e] = True
  assert all(covered[i] or text[i].isspace() for i in range(len(text)))
  return enc


@pytest.mark.parametrize("name", ["byte", "sentencepiece", "hf"])
def test_offsets_and_roundtrip(name, sp_model, hf_json):
  tok = _all_tokenizers(sp_model, hf_json)[name]
  for text in TEXTS:
    enc = _check_offsets(tok, text)
    decoded = tok.decode(enc.ids[1:-1])
    assert " ".join(decoded.split()) == " ".join(text.split())
  assert tok.vocab_size > max(tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id)


@pytest.mark.parametrize("name", ["byte", "sentencepiece", "hf"])
def test_special_tokens_registry(name, sp_model, hf_json):
  tok = _all_tokenizers(sp_model, hf_json)[name]
  base = tok.vocab_size
  specials = tokenizer_lib.SpecialTokens(num_semantic_codes=1000, extra=("<|endoftext|>",))
  new_size = tok.add_special_tokens(specials)
  already = 1 if name == "hf" else 0  # the HF vocabulary has <|endoftext|> already
  assert new_size == base + len(specials.tokens()) - already
  assert tok.add_special_tokens(specials) == new_size  # idempotent
  ids = [tok.token_to_id(t) for t in specials.tokens()]
  assert len(set(ids)) == len(ids)
  text = "a [MASK] b[gMASK]<|startofpiece|> <RECTOKEN> REC7 REC999 REC1000 </RECTOKEN> xREC5"
  enc = _check_offsets(tok, text)
  got = [tok.decode([i]) for i in enc.ids[1:-1] if i >= base or i == tok.token_to_id(
      "<|endoftext|>")]
  assert got == ["[MASK]", "[gMASK]", "<|startofpiece|>", "<RECTOKEN>", "REC7", "REC999",
                 "</RECTOKEN>"]  # REC1000 is not registered; xREC5 is not a whole word
  mask_pos = list(enc.ids).index(tok.token_to_id("[MASK]"))
  assert tuple(enc.offsets[mask_pos]) == (2, 8)
  assert tok.decode(enc.ids[1:-1]).replace(" ", "") == text.replace(" ", "")
  assert tok.decode(enc.ids[1:-1], skip_special=True).count("MASK") == 0
  # Pickling (Grain worker processes) keeps the ids.
  clone = pickle.loads(pickle.dumps(tok))
  np.testing.assert_array_equal(clone.encode(text).ids, tok.encode(text).ids)
  assert clone.vocab_size == new_size


def test_semantic_code_names():
  specials = tokenizer_lib.SpecialTokens(num_semantic_codes=4)
  assert specials.semantic_code(3) == "REC3"
  assert specials.tokens()[-4:] == ["REC0", "REC1", "REC2", "REC3"]
  with pytest.raises(ValueError):
    specials.semantic_code(4)


def test_sentencepiece_ids_and_load(sp_model):
  tok = tokenizer_lib.load_tokenizer(sp_model, tokenizer_lib.SpecialTokens())
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
  assert tok.token_to_id("[sMASK]") >= tok.vocab_size - len(tokenizer_lib.SpecialTokens().tokens())
  assert isinstance(tokenizer_lib.load_tokenizer("byte"), tokenizer_lib.ByteTokenizer)
  with pytest.raises(ValueError, match="unknown tokenizer"):
    tokenizer_lib.load_tokenizer("model.bin")


def test_sentencepiece_vocabulary_too_small_names_the_knob(tmp_path):
  texts = [f"misty heron mug {i} icy meadow box qwz" for i in range(50)]
  with pytest.raises(ValueError, match=r"a 270-piece SentencePiece model is too small: .* need "
                     r"(\d+); raise config.lm.tokenizer_vocab_size") as raised:
    tokenizer_lib.train_sentencepiece(texts, tmp_path / "m", 270)
  needed = int(raised.value.args[0].split(" need ")[1].split(";")[0])
  assert needed > 270
  assert tokenizer_lib.train_sentencepiece(texts, tmp_path / "m", needed).exists()
  assert not list(tmp_path.glob("*.tmp*"))


def test_hf_special_ids(hf_json):
  tok = tokenizer_lib.HFTokenizer(hf_json)
  assert tok.eos_id == tok.bos_id == tok.token_to_id("<|endoftext|>")
  assert tok.pad_id == tok.token_to_id("<pad>")
  with pytest.raises(ValueError, match="not in"):
    tokenizer_lib.HFTokenizer(hf_json, eos_token="</s>")


def test_resize_embedding_table():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(100, 16)).astype(np.float32)
  out = tokenizer_lib.resize_embedding_table(table, 110, rng=1)
  assert out.shape == (110, 16) and out.dtype == np.float32
  np.testing.assert_array_equal(out[:100], table)
  new = out[100:]
  assert np.abs(new - table.mean(0)).max() < 0.1 * table.std()
  assert len(np.unique(new[:, 0])) == 10  # distinguishable rows
  np.testing.assert_array_equal(tokenizer_lib.resize_embedding_table(table, 110, rng=1), out)
  np.testing.assert_array_equal(tokenizer_lib.resize_embedding_table(table, 100), table)
  with pytest.raises(ValueError):
    tokenizer_lib.resize_embedding_table(table, 99)


def test_cli_train_on_real_dataset(tmp_path):
  root = require_data_dir("amazon_office")
  out = tmp_path / "office_sp"
  proc = subprocess.run(
      [sys.executable, "-m", "recjax.text", "tokenizer", "train", "--dataset=amazon_office",
       f"--data_dir={root}", "--corpus=items", "--vocab_size=600",
       "--max_history_items=5", f"--output={out}"],
      capture_output=True, text=True, timeout=240, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  meta = json.loads(out.with_suffix(".json").read_text())
  assert meta["vocab_size"] == 600
  assert meta["vocab_size_with_special_tokens"] == 600 + len(
      tokenizer_lib.SpecialTokens().tokens())
  tok = tokenizer_lib.load_tokenizer(out.with_suffix(".model"))
  enc = tok.encode("HP 564 Inkjet Cartridges; Brand: HP")
  assert len(enc.ids) < 20 and tok.decode(enc.ids) == "HP 564 Inkjet Cartridges; Brand: HP"
  info = subprocess.run([sys.executable, "-m", "recjax.text", "tokenizer", "info",
                         f"--tokenizer={out.with_suffix('.model')}", "--semantic_codes=8",
                         "--text=a [MASK] REC3"], capture_output=True, text=True, check=True)
  assert "with special tokens: 617" in info.stdout
