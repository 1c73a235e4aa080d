"""Amazon Reviews files in the official formats: reader, registry spec, review prompts."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from recjax.data import readers, registry, splits
from recjax.data.readers import DataFormatError
from recjax.text.user_corpus import UserCorpus
from tests import amazon_files
from tests.datasets import require_data_dir


def _read(tmp_path, **kwargs):
  history = amazon_files.write_category(tmp_path, **kwargs)
  data = readers.read_amazon_reviews(tmp_path / "Office_Products_5.json.gz",
                                     tmp_path / "meta_Office_Products.json.gz", name="office")
  return history, data


def test_reviews_are_chronological_with_ratings_and_text_aligned(tmp_path):
  history, data = _read(tmp_path)
  assert data.num_users == len(history)
  for row, user in enumerate(data.user_ids):
    user = str(user)
    start, end = data.sequences.offsets[row], data.sequences.offsets[row + 1]
    expected = history[user]  # chronological; the file lists them newest first
    assert [str(data.item_ids[i]) for i in data.sequences[row]] == [a for a, _, _ in expected]
    assert data.timestamps[start:end].tolist() == [t for _, t, _ in expected]
    assert data.ratings[start:end].tolist() == [r for _, _, r in expected]
    assert [str(x) for x in data.reviews["review"][start:end]] == [
        amazon_files.review_text(user, a) for a, _, _ in expected]
    assert [str(x) for x in data.reviews["summary"][start:end]] == [
        amazon_files.summary_text(user, a) for a, _, _ in expected]


def test_item_text_from_metadata(tmp_path):
  _, data = _read(tmp_path)
  assert sorted(data.item_text) == sorted(readers.AMAZON_ITEM_FIELDS)
  row = {str(a): i for i, a in enumerate(data.item_ids)}
  b0, b1 = row["B000000000"], row["B000000001"]
  assert data.item_text["title"][b0] == "Stapler & Punch model 0"  # HTML entity undone
  assert data.item_text["categories"][b0] == "Office Products, Staplers"
  assert data.item_text["description"][b0] == "A sturdy stapler number 0. Metal."  # tags gone
  assert data.item_text["price"][b0] == "$0.99"
  assert data.item_text["price"][b1] == ""  # a page fragment, not a price
  assert "B999999999" not in row  # metadata of an item nobody reviewed is not an item


def test_2014_metadata_python_literals(tmp_path):
  amazon_files.write_category(tmp_path, num_items=3, num_users=2, per_user=2)
  meta = tmp_path / "meta_2014.json"
  meta.write_text(
      "{'asin': 'B000000000', 'title': 'Old stapler', 'price': 7.5, "
      "'categories': [['Office Products', 'Staplers'], ['Office Products', 'Desk']], "
      "'description': 'Sturdy.'}\n", encoding="utf-8")
  data = readers.read_amazon_reviews(tmp_path / "Office_Products_5.json.gz", meta)
  b0 = list(data.item_ids).index("B000000000")
  assert data.item_text["title"][b0] == "Old stapler"
  assert data.item_text["price"][b0] == "$7.50"
  assert data.item_text["categories"][b0] == "Office Products, Staplers, Desk"
  assert data.item_text["description"][b0] == "Sturdy."


def test_min_rating_keeps_only_high_ratings(tmp_path):
  history = amazon_files.write_category(tmp_path)
  data = readers.read_amazon_reviews(tmp_path / "Office_Products_5.json.gz", min_rating=4)
  assert data.ratings.min() >= 4
  assert data.num_interactions == sum(r >= 4 for h in history.values() for _, _, r in h)


@pytest.mark.parametrize("line,problem", [
    ({"asin": "B1", "overall": 5.0, "unixReviewTime": 1}, "'reviewerID'"),
    ({"reviewerID": "A1", "overall": 5.0, "unixReviewTime": 1}, "'asin'"),
    ({"reviewerID": "A1", "asin": "B1", "overall": "five", "unixReviewTime": 1}, "overall"),
    ({"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": "May"},
     "unixReviewTime"),
])
def test_bad_review_records_name_file_and_line(tmp_path, line, problem):
  good = {"reviewerID": "A0", "asin": "B0", "overall": 4.0, "unixReviewTime": 5}
  path = tmp_path / "reviews.json"
  path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n", encoding="utf-8")
  with pytest.raises(DataFormatError, match=f"{path}:2: .*{problem}"):
    readers.read_amazon_reviews(path)


def test_malformed_and_truncated_files(tmp_path):
  path = tmp_path / "reviews.json"
  path.write_text('{"reviewerID": "A0", "asin": "B0"\n', encoding="utf-8")
  with pytest.raises(DataFormatError, match=f"{path}:1: not a JSON object"):
    readers.read_amazon_reviews(path)
  amazon_files.write_category(tmp_path)
  whole = (tmp_path / "Office_Products_5.json.gz").read_bytes()
  cut = tmp_path / "cut.json.gz"
  cut.write_bytes(whole[:len(whole) // 2])
  with pytest.raises(DataFormatError, match=f"{cut}:[0-9]+: cannot read the file"):
    readers.read_amazon_reviews(cut)


def test_registry_spec_with_k_core_keeps_reviews_aligned(tmp_path):
  amazon_files.write_category(tmp_path / "office2018", num_users=30, num_items=20, per_user=5)
  spec = {"name": "office2018", "format": "amazon_reviews", "dir": "office2018",
          "files": {"reviews": "Office_Products_5.json.gz",
                    "meta": "meta_Office_Products.json.gz"},
          "preprocess": {"min_item_interactions": 6, "min_user_interactions": 4, "k_core": True}}
  data = registry.load_dataset(spec, tmp_path)
  assert 0 < data.num_items < 20
  assert np.bincount(data.sequences.values)[1:].min() >= 6
  assert data.sequences.lengths.min() >= 4 and data.num_users < 30
  for row, seq in enumerate(data.sequences):
    start = data.sequences.offsets[row]
    for k, item in enumerate(seq):
      user, asin = str(data.user_ids[row]), str(data.item_ids[item])
      assert str(data.reviews["review"][start + k]) == amazon_files.review_text(user, asin)


@pytest.mark.parametrize("family", ["explanation", "review"])
def test_review_prompts_never_show_held_out_reviews_in_training(tmp_path, family):
  _, data = _read(tmp_path)
  split = splits.leave_one_out(data)
  held_out = set()
  for row, seq in enumerate(data.sequences):
    user, start = str(data.user_ids[row]), data.sequences.offsets[row]
    for k in (len(seq) - 2, len(seq) - 1):  # validation and test interactions
      held_out.add(str(data.reviews["review"][start + k]))
      held_out.add(str(data.reviews["summary"][start + k]))
  train = UserCorpus(data, split, templates=family, part="train", template_choice="all")
  assert not train.skipped and len(train) == data.num_users * len(train.templates)
  texts = [train[i].text for i in range(len(train))]
  for text in texts:
    assert not any(h in text for h in held_out), text
    assert "Review by" in text  # the prompt or its target uses the (training) review
  test = UserCorpus(data, split, templates=family, part="test", template_choice="all")
  doc = test[0]
  row = doc.meta["user"]
  last = data.sequences.offsets[row + 1] - 1
  target = str(data.reviews["summary" if "summar" in doc.text else "review"][last])
  if family == "explanation":
    target = target.split(". ")[0] + "."
  assert doc.meta["target_text"] in (target, f"{data.ratings[last]:g}")
  assert doc.meta["target_text"] not in doc.text


def test_preprocess_that_removes_everything_is_an_error(tmp_path):
  amazon_files.write_category(tmp_path / "o", num_users=30, num_items=20, per_user=5)
  spec = {"name": "o", "format": "amazon_reviews", "dir": "o",
          "files": {"reviews": "Office_Products_5.json.gz"},
          "preprocess": {"min_item_interactions": 8, "min_user_interactions": 5, "k_core": True}}
  with pytest.raises(ValueError, match="'o': preprocess .* removed all 150 interactions"):
    registry.load_dataset(spec, tmp_path)


# ----------------------------------------------------------------------------------------------
# The real Amazon 2018 review files (../shared/data): built-in datasets.


def _raw_reviews(path):
  with gzip.open(path, "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("name,file,counts,dropped", [
    ("amazon2018_gift_cards", "Gift_Cards_5.json.gz", (458, 148, 2969), 3),
    ("amazon2018_all_beauty", "All_Beauty_5.json.gz", (991, 85, 4161), 1108),
])
def test_real_amazon2018_counts_and_duplicates(name, file, counts, dropped):
  root = require_data_dir(name)
  raw = _raw_reviews(root / name / file)
  distinct = {(r["reviewerID"], r["asin"], r["unixReviewTime"]) for r in raw}
  assert len(raw) - len(distinct) == dropped
  data = registry.load_dataset(name, root)
  assert (data.num_users, data.num_items, data.num_interactions) == counts == (
      len({u for u, _, _ in distinct}), len({i for _, i, _ in distinct}), len(distinct))
  assert data.report[0] == (f"dropped {dropped:,} exact duplicate interactions (same user, item "
                            f"and timestamp) of {len(raw):,}; preprocess.drop_duplicates=False "
                            "keeps them")
  kept = registry.load_dataset({"name": name, "preprocess": {"drop_duplicates": False}}, root)
  assert kept.num_interactions == len(raw)
  # Ratings and review text stay with their (user, item, time).
  first = {}
  for r in raw:
    first.setdefault((r["reviewerID"], r["asin"], r["unixReviewTime"]), r)
  user_of = np.repeat(data.user_ids, data.sequences.lengths)
  items = data.item_ids[data.sequences.values]
  for k in range(0, data.num_interactions, 97):
    r = first[str(user_of[k]), str(items[k]), int(data.timestamps[k])]
    assert data.ratings[k] == r["overall"]
    assert str(data.reviews["review"][k]) == readers.clean_text(r.get("reviewText", ""))


def test_real_gift_cards_item_text_and_review_prompts():
  root = require_data_dir("amazon2018_gift_cards")
  data = registry.load_dataset("amazon2018_gift_cards", root)
  assert sorted(data.item_text) == sorted(readers.AMAZON_ITEM_FIELDS)
  assert np.sum(data.item_text["title"][1:] == "") == 0  # the metadata covers all 148 items
  assert not any("item table" in line for line in data.report)
  split = splits.leave_one_out(data)
  corpus = UserCorpus(data, split, templates="review", part="train", template_choice="all")
  assert not corpus.skipped and len(corpus) > 0
  for i in range(0, len(corpus), max(1, len(corpus) // 20)):
    doc = corpus[i]
    row = doc.meta["user"]
    start, end = data.sequences.offsets[row], data.sequences.offsets[row + 1]
    stop = end - 2 if end - start >= 3 else end  # shorter users train on their whole sequence
    training = [str(t) for t in data.reviews["review"][start:stop] if str(t)] + [
        str(t) for t in data.reviews["summary"][start:stop] if str(t)]
    assert any(t[:40] in doc.text for t in training), doc.text  # a real review of this user
