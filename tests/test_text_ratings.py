"""P5 rating prompts rendered from the ratings in real ml-100k files."""
import numpy as np
import pytest

from recjax.data import registry
from recjax.data.splits import leave_one_out, temporal
from recjax.text import templates, user_corpus
from tests.datasets import require_data_dir


@pytest.fixture(scope="module")
def ml100k():
  root = require_data_dir("ml-100k")
  data = registry.load_dataset({"name": "ml-100k"}, root)
  raw = np.loadtxt(root / "ml-100k" / "u.data", dtype=np.int64)  # user item rating timestamp
  u_data = {(str(u), str(i)): r for u, i, r, _ in raw.tolist()}  # each pair is rated once
  return data, u_data


def _file_rating(data, u_data, user: int, item: int) -> int:
  """The rating u.data gives for (user row, internal item id)."""
  return u_data[str(data.user_ids[user]), str(data.item_ids[item])]


def test_rating_templates_render_real_ratings(ml100k):
  data, u_data = ml100k
  split = leave_one_out(data)
  corpus = user_corpus.UserCorpus(data, split, "rating:all", template_choice="all")
  assert not corpus.skipped
  assert [t.name for t in corpus.templates] == [t.name for t in templates.select("rating:all")]
  train_row = {int(u): r for r, u in enumerate(split.train_users)}
  answers = []
  for i in range(0, len(corpus), 3):
    doc = corpus[i]
    user, _, target, interaction = corpus.example(i // len(corpus.templates))
    assert doc.meta["family"] == "rating" and doc.meta["user"] == user
    rating = _file_rating(data, u_data, user, target)
    assert doc.meta["target_text"] == str(rating) == f"{data.ratings[interaction]:g}"
    assert doc.text[doc.target_start:] == str(rating)
    # The target of the rating prompt is the item the prompt names.
    assert [s.item for s in doc.spans if s.kind == "item"] == [target]
    # No leakage: the rated interaction lies in the user's training prefix.
    position = interaction - int(data.sequences.offsets[user])
    assert 0 <= position < len(split.train[train_row[user]])
    answers.append(rating)
  assert len(answers) > 600 and set(answers) == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("part", ["valid", "test"])
def test_eval_prompts_hold_out_the_rating(ml100k, part):
  data, u_data = ml100k
  split = leave_one_out(data)
  corpus = user_corpus.UserCorpus(data, split, "p5_rating_heldout", part=part)
  eval_set = split.valid if part == "valid" else split.test
  assert len(corpus) == len(eval_set) == data.num_users
  for i in range(0, len(corpus), 5):
    doc = corpus[i]
    user, target = int(eval_set.users[i]), int(eval_set.targets[i])
    assert doc.target_start == len(doc.text)  # the prompt has no answer in it
    assert doc.meta["target_item"] == target
    assert doc.meta["target_text"] == str(_file_rating(data, u_data, user, target))
    # The held-out interaction is the last (test) or second last (valid) one.
    _, _, _, interaction = corpus.example(i)
    assert interaction == int(data.sequences.offsets[user + 1]) - (2 if part == "valid" else 1)


def test_temporal_training_ratings_come_before_the_cutoff(ml100k):
  data, _ = ml100k
  split = temporal(data)
  corpus = user_corpus.UserCorpus(data, split, "p5_rating_1", targets="all")
  t_valid = np.quantile(data.timestamps, 0.8)
  for i in range(0, len(corpus), 97):
    doc = corpus[i]
    _, _, _, interaction = corpus.example(i)
    assert data.timestamps[interaction] < t_valid
    assert doc.meta["target_text"] == f"{data.ratings[interaction]:g}"


def test_explicit_extras_override_data_ratings(ml100k):
  data, _ = ml100k
  split = leave_one_out(data)
  fixed = user_corpus.UserCorpus(data, split, "p5_rating_1",
                                 extras={"rating": np.full(data.num_interactions, 2.5)})
  assert {fixed[i].meta["target_text"] for i in range(0, len(fixed), 50)} == {"2.5"}
  # Other extras still leave {rating} to the data.
  reviews = user_corpus.UserCorpus(data, split, "p5_rating_1,p5_review_1",
                                   extras={"review": np.full(data.num_interactions, "ok"),
                                           "summary": np.full(data.num_interactions, "fine")},
                                   template_choice="all")
  doc = reviews[0]
  _, _, _, interaction = reviews.example(0)
  assert doc.meta["target_text"] == f"{data.ratings[interaction]:g}"
