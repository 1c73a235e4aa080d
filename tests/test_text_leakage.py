"""No leakage: training text never shows a user's validation or test target (real files)."""
import numpy as np
import pytest

from recjax.data import registry
from recjax.data.splits import leave_one_out, temporal
from recjax.text import templates, user_corpus
from tests.datasets import require_data_dir


@pytest.fixture(scope="module")
def office():
  root = require_data_dir("amazon_office")
  data = registry.load_dataset({"name": "amazon_office"}, root)
  return data, leave_one_out(data)


def _extras(data):
  """Placeholder per-interaction extras so that every template family renders."""
  n = data.num_interactions
  return {"rating": np.full(n, 5.0), "review": np.full(n, "great"),
          "summary": np.full(n, "good"), "explanation": np.full(n, "it works")}


def _check_training_docs(data, split, corpus, indices):
  """History and target items come from the user's training prefix; eval targets never show."""
  train_row = {int(u): r for r, u in enumerate(split.train_users)}
  heldout = {}
  for eval_set in (split.valid, split.test):
    for u, t in zip(eval_set.users, eval_set.targets):
      heldout.setdefault(int(u), set()).add(int(t))
  checked = 0
  for i in indices:
    doc = corpus[i]
    user = doc.meta["user"]
    prefix = set(split.train[train_row[user]].tolist())
    roles = {s.role for s in doc.spans if s.kind == "item"}
    assert roles <= {"history", "target", "candidate"}
    for s in doc.spans:
      if s.kind == "item" and s.role in ("history", "target"):
        assert s.item in prefix, (doc.meta, s)
    assert not doc.meta["target_item"] or doc.meta["target_item"] in prefix
    mentioned = {s.item for s in doc.spans if s.kind == "item"}
    for item in heldout.get(user, ()):
      assert item not in mentioned or item in prefix, (doc.meta, item)
      text = corpus.catalogue.texts[item]
      # Text-level check, where the held-out item's text is not also some mentioned item's.
      if len(text) > 15 and not any(text in corpus.catalogue.texts[m] for m in mentioned):
        assert text not in doc.text, (doc.meta, text)
    checked += 1
  return checked


@pytest.mark.parametrize("template", [t.name for t in templates.TEMPLATES
                                      if t.family != "item"])
def test_training_text_has_no_heldout_targets(office, template):
  data, split = office
  corpus = user_corpus.UserCorpus(data, split, template, extras=_extras(data), num_candidates=19,
                                  max_history_items=50)
  # The main templates on every user; the rest on a fixed sample (test time).
  step = 1 if template in ("calrec", "profile", "p5_seq_1") else 7
  assert _check_training_docs(data, split, corpus, range(0, len(corpus), step)) > 600


def test_every_training_position(office):
  data, split = office
  corpus = user_corpus.UserCorpus(data, split, "calrec", targets="all")
  assert len(corpus) == int(np.maximum(split.train.lengths - 1, 0).sum())
  assert _check_training_docs(data, split, corpus, range(0, len(corpus), 5)) > 5000


@pytest.mark.parametrize("name", ["amazon_scientific", "amazon_games6k"])
def test_other_domains(name):
  root = require_data_dir(name)
  data = registry.load_dataset({"name": name}, root)
  split = leave_one_out(data)
  corpus = user_corpus.UserCorpus(data, split, "calrec,p5_direct_2", template_choice="all")
  assert _check_training_docs(data, split, corpus, range(0, len(corpus), 11)) > 1000


def test_temporal_split():
  root = require_data_dir("ml-100k")
  data = registry.load_dataset({"name": "ml-100k"}, root)
  split = temporal(data)
  corpus = user_corpus.UserCorpus(data, split, "profile,p5_seq_1", max_history_items=20,
                                  template_choice="all")
  assert _check_training_docs(data, split, corpus, range(len(corpus))) > 500


def test_ml100k_real_ratings():
  """Rating prompts from the data's own ratings rate only training-prefix interactions."""
  root = require_data_dir("ml-100k")
  data = registry.load_dataset({"name": "ml-100k"}, root)
  split = leave_one_out(data)
  corpus = user_corpus.UserCorpus(data, split, "rating:all", template_choice="all")
  assert _check_training_docs(data, split, corpus, range(0, len(corpus), 2)) > 1000
  for i in range(0, len(corpus), 7):
    user, _, _, interaction = corpus.example(i // len(corpus.templates))
    assert interaction - data.sequences.offsets[user] < split.train.lengths[user]
    assert corpus[i].meta["target_text"] == f"{data.ratings[interaction]:g}"


def test_check_detects_a_leaking_split(office):
  """Sanity check of the checker: training on full sequences must be caught."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  data, split = office
  leaky = dataclasses.replace(split, train=data.sequences,
                              train_users=np.arange(data.num_users, dtype=np.int32))
  corpus = user_corpus.UserCorpus(data, leaky, "calrec")
  with pytest.raises(AssertionError):
    _check_training_docs(data, split, corpus, range(len(corpus)))

