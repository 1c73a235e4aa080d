"""Items written as semantic IDs (recjax.text.semantic_text): one token per code, any template,
trie-constrained decoding onto real items, and the errors of mismatched files."""
import dataclasses

import jax
import numpy as np
import pytest

from recjax import config as config_lib
from recjax.curriculum import semantic_ids as sid
from recjax.data.synthetic import make_synthetic
from recjax.models import decoding, llm
from recjax.text import item_text, pipeline, semantic_text
from recjax.text import tokenizer as tokenizer_lib


def test_code_tokens_of_a_hand_made_table():
  codes = np.array([[-1, -1], [0, 2], [1, 0], [1, 2]])
  np.testing.assert_array_equal(semantic_text.digit_offsets(codes), [0, 2, 5])
  assert semantic_text.num_code_tokens(codes) == 5
  assert semantic_text.code_texts(codes) == [
      "", "<RECTOKEN> REC0 REC4 </RECTOKEN>", "<RECTOKEN> REC1 REC2 </RECTOKEN>",
      "<RECTOKEN> REC1 REC4 </RECTOKEN>"]
  with pytest.raises(ValueError, match="negative"):
    semantic_text.digit_offsets(np.array([[-1], [0], [-1]]))


def test_shared_digits_share_one_token_range():
  # The SAE's k positions index one dictionary: latent c is REC<c> wherever it is.
  codes = np.array([[-1, -1, -1], [0, 3, 0], [2, 1, 1]])
  np.testing.assert_array_equal(semantic_text.digit_offsets(codes, shared_digits=2), [0, 0, 4, 6])
  assert semantic_text.num_code_tokens(codes, shared_digits=2) == 6
  assert semantic_text.num_code_tokens(codes) == 9
  assert semantic_text.code_texts(codes, shared_digits=2) == [
      "", "<RECTOKEN> REC0 REC3 REC4 </RECTOKEN>", "<RECTOKEN> REC2 REC1 REC5 </RECTOKEN>"]
  with pytest.raises(ValueError, match=r"shared_digits=4 outside 0..3"):
    semantic_text.digit_offsets(codes, shared_digits=4)


@pytest.fixture(scope="module")
def ids_file(tmp_path_factory):
  data = make_synthetic(num_users=60, num_items=40, num_clusters=4, seed=0)
  catalogue = item_text.ItemCatalogue.build(data)
  embeddings = np.random.default_rng(0).normal(size=(data.num_items + 1, 16))
  ids = sid.rq_kmeans(embeddings[1:], sid.RQKMeansConfig(levels=2, codebook_size=4, seed=0))
  path = tmp_path_factory.mktemp("ids") / "ids.npz"
  ids.save(path)
  return path, catalogue, ids


def _config(path, item_format):
  config = config_lib.base_config("lm")
  config.data.dataset = dict(name="synthetic", num_users=60, num_items=40, num_clusters=4,
                             seed=0)
  config.text.templates = "calrec"
  config.text.seq_len = 512
  config.text.item_format = item_format
  config.text.semantic_ids = str(path)
  return config


@pytest.mark.parametrize("item_format", ["semantic_id", "both"])
def test_every_template_writes_items_in_the_format(ids_file, item_format):
  path, catalogue, ids = ids_file
  config = _config(path, item_format)
  tok = pipeline.build_tokenizer(config.text)
  need = semantic_text.num_code_tokens(ids.codes)
  assert sum(t.startswith("REC") for t in tok.special_tokens) == need  # registered exactly
  corpus = pipeline.build_corpus(config, "train", tok)
  texts = semantic_text.code_texts(ids.codes)
  doc = corpus[0]
  item_spans = [s for s in doc.spans if s.kind == "item"]
  assert item_spans
  for span in item_spans:
    written = doc.text[span.start:span.end]
    expected = texts[span.item] if item_format == "semantic_id" else (
        f"{texts[span.item]} {catalogue.texts[span.item]}")
    assert written == expected
    # Each code is one token between the brackets.
    enc = tok.encode(texts[span.item]).ids.tolist()
    codes = [tok.special_tokens[t] for t in texts[span.item].split()]
    assert [i for i in enc if i in codes] == codes


def test_trie_over_semantic_ids_decodes_only_real_items(ids_file):
  path, _, _ = ids_file
  config = _config(path, "semantic_id")
  tok = pipeline.build_tokenizer(config.text)
  corpus = pipeline.build_corpus(config, "train", tok)
  rows = [corpus.catalogue.tokens[i].tolist() + [tok.eos_id]
          for i in range(1, corpus.catalogue.num_items + 1)]
  model = llm.create_model("tiny_llama", seed=0, vocab_size=384, initializer_range=0.5)
  prompts = decoding.left_pad([tok.encode("a user bought", add_bos=True).ids.tolist()] * 3)
  out = decoding.generate(model, *prompts, decoding.DecodeConfig(max_new_tokens=24,
                                                                 method="sample",
                                                                 stop_tokens=(tok.eos_id,)),
                          rng=jax.random.key(1), trie=decoding.Trie.from_sequences(rows))
  for row, n in zip(np.asarray(out.tokens), np.asarray(out.lengths)):
    assert row[:n].tolist() in rows


def test_mismatched_files_and_formats(ids_file, tmp_path):
  path, catalogue, ids = ids_file
  with pytest.raises(ValueError, match="item_format='ids'"):
    semantic_text.format_catalogue(catalogue, ids.codes, "ids")
  with pytest.raises(ValueError, match="cover 39 items but synthetic has 40"):
    semantic_text.format_catalogue(catalogue, ids.codes[:-1], "semantic_id")
  tok = tokenizer_lib.ByteTokenizer()
  tok.add_special_tokens(tokenizer_lib.SpecialTokens(num_semantic_codes=2))
  with pytest.raises(ValueError, match=r"registers 2 semantic-code tokens but the IDs need"):
    semantic_text.format_catalogue(catalogue, ids.codes, "semantic_id", tok)
  with pytest.raises(FileNotFoundError, match="no such file"):
    semantic_text.load_semantic_ids(tmp_path / "missing.npz")
  config = _config(path, "semantic_id")
  config.text.semantic_ids = ""
  with pytest.raises(ValueError, match="needs config.text.semantic_ids"):
    pipeline.build_corpus(config, "train", None)


def test_a_shared_vocabulary_file_registers_and_writes_the_shared_tokens(ids_file, tmp_path):
  _, catalogue, ids = ids_file
  shared = dataclasses.replace(ids, shared_digits=2)
  path = tmp_path / "shared.npz"
  shared.save(path)
  assert semantic_text.load_semantic_ids(path).shared_digits == 2
  config = _config(path, "semantic_id")
  tok = pipeline.build_tokenizer(config.text)
  need = semantic_text.num_code_tokens(ids.codes, shared_digits=2)
  assert need < semantic_text.num_code_tokens(ids.codes)
  assert sum(t.startswith("REC") for t in tok.special_tokens) == need
  corpus = pipeline.build_corpus(config, "train", tok)
  texts = semantic_text.code_texts(ids.codes, shared_digits=2)
  assert corpus.catalogue.texts[1:] == texts[1:]
  assert catalogue.num_items == corpus.catalogue.num_items
