"""SeqIO adapters (skipped unless the `seqio` extra is installed)."""
import grain
import numpy as np
import pytest

seqio = pytest.importorskip("seqio")

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf

from recjax.text import tokenizer as tokenizer_lib
from recjax.data.splits import leave_one_out
from recjax.data.synthetic import make_synthetic
from recjax.text import mixture, pipeline, seqio_tasks, user_corpus
from tests.datasets import require_data_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  data = make_synthetic(num_users=40, num_items=120, num_clusters=5, seed=0, max_length=10)
  split = leave_one_out(data)
  texts = [user_corpus.UserCorpus(data, split, "calrec,profile")[i].text for i in range(40)]
  model = tokenizer_lib.train_sentencepiece(texts * 3, tmp_path_factory.mktemp("sp") / "m", 400)
  return data, split, seqio_tasks.sentencepiece_vocabulary(str(model)), model


def _corpus_factory(data, split, templates):
  return lambda part: user_corpus.UserCorpus(data, split, templates, part=part)


def test_task_examples_match_corpus(setup):
  data, split, vocab, model = setup
  task = seqio_tasks.register_corpus_task("recjax_test_calrec",
                                          _corpus_factory(data, split, "calrec"), vocab)
  corpus = user_corpus.UserCorpus(data, split, "calrec")
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


def _seqio_mixture_in_grain_order(name: str, mix: mixture.Mixture,
                                  config: pipeline.PipelineConfig, vocab) -> seqio.Mixture:
  """A SeqIO mixture of one task per domain that draws what the Grain path draws for `config`.

  SeqIO's default mixing samples with tf.data's RNG, so it cannot equal recjax's seeded mixture;
  here the domain choices and each task's document order come from the recjax Mixture and the
  pipeline's seeded shuffle (which depends only on the length and the seed).
  """
  order = list(grain.MapDataset.range(len(mix)).shuffle(seed=config.seed))
  domains = [mix.domain_of(i) for i in order]
  tasks = []
  for d, domain in enumerate(mix.domains):
    docs = [mix[i] for i, dom in zip(order, domains) if dom == d]
    seqio_tasks.register_corpus_task(f"{name}_{d}", lambda part, docs=docs: docs, vocab,
                                     splits=("train",))
    tasks.append((f"{name}_{d}", domain.rate))
  choices = tf.data.Dataset.from_tensor_slices(np.asarray(domains, np.int64))

  def sample_fn(datasets, rates, seed):
    del rates, seed  # fixed by the recjax Mixture's seed and config.seed
    return tf.data.Dataset.choose_from_datasets(datasets, choices)

  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, tasks, sample_fn=sample_fn)


def test_mixture_yields_the_grain_path_examples(setup):
  data, split, vocab, model = setup
  ours = tokenizer_lib.SentencePieceTokenizer(model)
  seed = 3
  domains = [mixture.Domain("Shop A", user_corpus.UserCorpus(data, split, "calrec", targets="all"),
                            0.7),
             mixture.Domain("Shop B", user_corpus.UserCorpus(data, split, "profile"), 0.3)]
  mix = mixture.Mixture(domains, length=120, seed=seed)
  config = pipeline.PipelineConfig(seq_len=1024, batch_size=1, pack=False, seed=seed,
                                   num_epochs=1, add_bos=False)
  grain_docs = list(pipeline.shard_documents(mix, config))
  grain_rows = [b["tokens"][0][b["segment_ids"][0] > 0]
                for b in pipeline.make_text_dataset(mix, ours, config)]

  seqio_mix = _seqio_mixture_in_grain_order("recjax_test_grain_mix", mix, config, vocab)
  examples = list(seqio_mix.get_dataset(
      {"inputs": 1024, "targets": 1024}, split="train", shuffle=False, seed=seed, num_epochs=1,
      copy_pretokenized=True, passthrough_features=["domain"]).as_numpy_iterator())

  assert len(examples) == len(grain_docs) == len(grain_rows) == len(mix)
  assert {doc.meta["domain"] for doc in grain_docs} == {"Shop A", "Shop B"}
  for ex, doc, row in zip(examples, grain_docs, grain_rows):
    assert ex["domain"].decode() == doc.meta["domain"]
    assert ex["inputs_pretokenized"].decode() == doc.text[:doc.target_start]
    assert ex["targets_pretokenized"].decode() == doc.text[doc.target_start:]
    # The Grain row tokenizes the whole text, SeqIO inputs and targets apart: equal when the
    # target starts a new piece, which the templates guarantee (a space or newline before it).
    assert ex["inputs"].tolist() + ex["targets"].tolist() == row.tolist()


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
