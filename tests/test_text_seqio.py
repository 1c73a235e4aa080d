"""SeqIO adapters (skipped unless the `seqio` extra is installed)."""
import pytest

seqio = pytest.importorskip("seqio")

# pylint: disable=g-import-not-at-top,wrong-import-position
from recjax import tokenizer as tokenizer_lib
from recjax.data.splits import leave_one_out
from recjax.data.synthetic import make_synthetic
from recjax.text import render, seqio_tasks
from tests.datasets import require_data_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  data = make_synthetic(num_users=40, num_items=120, num_clusters=5, seed=0, max_length=10)
  split = leave_one_out(data)
  texts = [render.UserCorpus(data, split, "calrec,profile")[i].text for i in range(40)]
  model = tokenizer_lib.train_sentencepiece(texts * 3, tmp_path_factory.mktemp("sp") / "m", 400)
  return data, split, seqio_tasks.sentencepiece_vocabulary(str(model)), model


def _corpus_factory(data, split, templates):
  return lambda part: render.UserCorpus(data, split, templates, part=part)


def test_task_examples_match_corpus(setup):
  data, split, vocab, model = setup
  task = seqio_tasks.register_corpus_task("recjax_test_calrec",
                                          _corpus_factory(data, split, "calrec"), vocab)
  corpus = render.UserCorpus(data, split, "calrec")
  ds = task.get_dataset({"inputs": 512, "targets": 64}, split="train", shuffle=False)
  examples = list(ds.as_numpy_iterator())
  assert len(examples) == len(corpus)
  ours = tokenizer_lib.SentencePieceTokenizer(model)
  for i in (0, 7, len(corpus) - 1):
    doc, ex = corpus[i], examples[i]
    assert ex["inputs_pretokenized"].decode() == doc.text[:doc.target_start]
    assert ex["targets_pretokenized"].decode() == doc.meta["target_text"]
    assert vocab.decode(ex["targets"][:-1].tolist()) == doc.meta["target_text"]
    assert ex["targets"][-1] == vocab.eos_id
    assert ex["inputs"].tolist() == ours.encode(doc.text[:doc.target_start]).ids.tolist()
  test = list(task.get_dataset({"inputs": 512, "targets": 64}, split="test",
                               shuffle=False).as_numpy_iterator())
  assert [int(e["target_item"]) for e in test] == split.test.targets.tolist()


def test_mixture(setup):
  data, split, vocab, _ = setup
  seqio_tasks.register_corpus_task("recjax_test_a", _corpus_factory(data, split, "calrec"),
                                   vocab)
  seqio_tasks.register_corpus_task("recjax_test_b", _corpus_factory(data, split, "profile"),
                                   vocab)
  mix = seqio_tasks.register_mixture("recjax_test_mix", [("recjax_test_a", 3.0),
                                                         ("recjax_test_b", 1.0)])
  ds = mix.get_dataset({"inputs": 512, "targets": 512}, split="train", shuffle=True, seed=0,
                       num_epochs=None)
  # Mixtures keep only the output features; calrec examples have inputs, profile ones none.
  has_inputs = [len(ex["inputs"]) > 0 for ex in ds.take(400).as_numpy_iterator()]
  share = sum(has_inputs) / len(has_inputs)
  assert 0.65 < share < 0.85


def test_registry_dataset_task(setup):
  root = require_data_dir("amazon_office")
  _, _, vocab, _ = setup
  task = seqio_tasks.register_dataset_task(
      "recjax_test_office_heldout", {"name": "amazon_office"}, str(root), vocab,
      templates="sequential:held_out", max_history_items=5)
  ex = next(task.get_dataset({"inputs": 1024, "targets": 128}, split="validation",
                             shuffle=False).as_numpy_iterator())
  assert ex["template"].decode() == "p5_seq_heldout"
  assert ex["domain"].decode() == "Amazon Office Products"
