"""MovieLens CSV releases (ml-latest-small, ml-20m, ml-25m, ml-32m): small files, the real one."""
from __future__ import annotations

import collections
import csv
import pathlib

import numpy as np
import pytest

from recjax.data import readers, registry, splits
from recjax.data.readers import DataFormatError
from tests.datasets import require_data_dir
from tests.test_data_readers import check_canonical, rows, write

RATINGS = ("userId,movieId,rating,timestamp\n"
           "1,11,4.0,300\n"
           "1,7,3.5,100\n"
           "2,11,0.5,200\n"
           "1,29,5.0,200\n")
MOVIES = ('movieId,title,genres\n'
          '7,Sabrina (1995),Comedy|Romance\n'
          '11,"American President, The (1995)",Comedy|Drama|Romance\n'
          '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",'
          'Adventure|Fantasy\n'
          '99,Unrated (2000),(no genres listed)\n')
TAGS = ("userId,movieId,tag,timestamp\n"
        "1,11,politics,400\n"
        "1,11,Michael Douglas,350\n"
        "1,11,politics,500\n"
        '1,7,"funny, light",120\n'
        "2,29,weird,250\n")  # user 2 never rated movie 29


def _files(tmp_path: pathlib.Path, ratings: str = RATINGS):
  return (write(tmp_path / "ratings.csv", ratings), write(tmp_path / "movies.csv", MOVIES),
          write(tmp_path / "tags.csv", TAGS))


def test_ratings_titles_and_tags(tmp_path):
  data = readers.read_movielens_csv(*_files(tmp_path))
  check_canonical(data)
  assert data.user_ids.tolist() == ["1", "2"]
  assert rows(data) == [["7", "29", "11"], ["11"]]  # by timestamp within a user
  assert data.timestamps.tolist() == [100, 200, 300, 200]
  assert data.ratings.tolist() == [3.5, 5.0, 4.0, 0.5]  # half stars kept
  # Tags: distinct, oldest first, on the interaction of the movie the user tagged.
  assert data.reviews["tags"].tolist() == ["funny, light", "", "Michael Douglas, politics", ""]
  titles = dict(zip(data.item_ids.tolist(), data.item_text["title"].tolist()))
  assert titles["11"] == "American President, The (1995)"
  assert titles["29"] == "City of Lost Children, The (Cité des enfants perdus, La) (1995)"
  genres = dict(zip(data.item_ids.tolist(), data.item_text["genres"].tolist()))
  assert genres["11"] == "Comedy, Drama, Romance"
  assert "99" not in data.item_ids.tolist()  # listed, never rated: not in the catalogue
  assert data.report == ["1 of 5 tags are on movies their user did not rate; left out"]


def test_min_rating_order_and_optional_files(tmp_path):
  ratings, movies, tags = _files(tmp_path)
  positive = readers.read_movielens_csv(ratings, tags=tags, min_rating=4)
  assert rows(positive) == [["29", "11"]]
  assert positive.reviews["tags"].tolist() == ["", "Michael Douglas, politics"]
  assert positive.item_text == {}
  assert positive.report == ["2 of 5 tags are on movies their user did not rate (or rated "
                             "below min_rating); left out"]
  in_file_order = readers.read_movielens_csv(ratings, order="file")
  assert rows(in_file_order) == [["11", "7", "29"], ["11"]]
  assert in_file_order.reviews == {}  # no tags file: no per-interaction text


def test_registry_spec_and_byte_order_mark(tmp_path):
  d = tmp_path / "ml-csv"
  write(d / "ratings.csv", "\ufeff" + RATINGS)
  write(d / "movies.csv", MOVIES)
  data = registry.load_dataset({"name": "mine", "format": "movielens_csv", "dir": "ml-csv",
                                "files": {"ratings": "ratings.csv", "movies": "movies.csv"}},
                               tmp_path)
  assert data.num_interactions == 4 and data.user_ids[0] == "1"


@pytest.mark.parametrize("name,text,line,problem", [
    ("ratings.csv", "user,movie,rating,time\n1,2,3,4\n", 1,
     "expected the header userId,movieId,rating,timestamp, got 'user,movie,rating,time'"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,3\n", 3,
     "expected 4 comma-separated fields"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n1,2,good,4\n", 3,
     "rating must be a number, got 'good'"),
    ("ratings.csv", "userId,movieId,rating,timestamp\n1,-2,3,4\n", 2,
     "movieId must be a non-negative integer, got '-2'"),
    ("ratings.csv", "userId,movieId,rating,timestamp\nx,2,3,4\n", 2,
     "userId must be an integer, got 'x'"),
    ("movies.csv", "movieId,title,genres\n2,Heat, (1995),Action\n", 2,
     "expected 3 comma-separated fields"),
])
def test_bad_files_name_file_and_line(tmp_path, name, text, line, problem):
  ratings = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n")
  path = write(tmp_path / name, text)
  with pytest.raises(DataFormatError, match=problem) as info:
    readers.read_movielens_csv(ratings, path if name == "movies.csv" else None)
  assert (info.value.path, info.value.line) == (str(path), line)


def test_blank_lines_and_quoted_line_breaks_keep_line_numbers(tmp_path):
  ratings = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n\n"
                  "1,3,4,5\n")
  movies = write(tmp_path / "movies.csv", 'movieId,title,genres\n2,"Two\nlines",Drama\n\n'
                 "3,Three,Drama\n")
  data = readers.read_movielens_csv(ratings, movies)
  assert data.num_interactions == 2
  assert data.item_text["title"].tolist() == ["", "Two lines", "Three"]
  bad = write(tmp_path / "bad.csv", 'movieId,title,genres\n2,"Two\nlines",Drama\n\n3,x\n')
  with pytest.raises(DataFormatError, match="expected 3 comma-separated") as info:
    readers.read_movielens_csv(ratings, bad)
  assert info.value.line == 5
  bad_rating = write(tmp_path / "r.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n\n"
                     "1,2,3,4\n1,5,x,4\n")
  with pytest.raises(DataFormatError, match="rating must be a number, got 'x'") as info:
    readers.read_movielens_csv(bad_rating)
  assert info.value.line == 5


def test_empty_and_missing(tmp_path):
  with pytest.raises(DataFormatError, match="file is empty"):
    readers.read_movielens_csv(write(tmp_path / "ratings.csv", ""))
  with pytest.raises(DataFormatError, match="no interactions left"):
    readers.read_movielens_csv(write(tmp_path / "r.csv", "userId,movieId,rating,timestamp\n"))
  with pytest.raises(readers.MissingDataError, match="file not found"):
    readers.read_movielens_csv(tmp_path / "absent.csv")


# ----------------------------------------------------------------------------------------------
# The real ml-latest-small release.


@pytest.fixture(scope="module")
def latest():
  root = require_data_dir("ml-latest-small")
  return root / "ml-latest-small", registry.load_dataset("ml-latest-small", root)


def test_ml_latest_small_counts_ratings_and_titles(latest):
  d, data = latest
  check_canonical(data)
  # ../shared/data/README.md: 610 users, 9,724 rated movies (9,742 listed), 100,836 ratings.
  assert (data.num_users, data.num_items, data.num_interactions) == (610, 9724, 100_836)
  with open(d / "ratings.csv", newline="") as f:
    raw = list(csv.DictReader(f))
  assert collections.Counter(data.ratings.tolist()) == collections.Counter(
      float(r["rating"]) for r in raw)
  assert set(data.ratings.tolist()) == {x / 2 for x in range(1, 11)}
  user_of = np.repeat(np.arange(data.num_users), data.sequences.lengths)
  same_user = user_of[1:] == user_of[:-1]
  assert np.all(np.diff(data.timestamps)[same_user] >= 0)
  titles = dict(zip(data.item_ids.tolist(), data.item_text["title"].tolist()))
  assert titles["1"] == "Toy Story (1995)"
  assert titles["11"] == "American President, The (1995)"  # quoted, with a comma
  genres = dict(zip(data.item_ids.tolist(), data.item_text["genres"].tolist()))
  assert genres["1"] == "Adventure, Animation, Children, Comedy, Fantasy"


def test_ml_latest_small_tags_sit_on_their_interactions(latest):
  d, data = latest
  with open(d / "ratings.csv", newline="") as f:
    rated = {(r["userId"], r["movieId"]) for r in csv.DictReader(f)}
  with open(d / "tags.csv", newline="") as f:
    tags = list(csv.DictReader(f))
  on_rated = collections.defaultdict(set)
  for t in tags:
    if (t["userId"], t["movieId"]) in rated:
      on_rated[t["userId"], t["movieId"]].add(readers.clean_text(t["tag"]))
  unrated = sum((t["userId"], t["movieId"]) not in rated for t in tags)
  assert data.report == [f"{unrated:,} of {len(tags):,} tags are on movies their user did not "
                         "rate; left out"]
  user_of = np.repeat(data.user_ids, data.sequences.lengths)
  movie_of = data.item_ids[data.sequences.values]
  tagged = {}
  for u, m, text in zip(user_of, movie_of, data.reviews["tags"]):
    if str(text):
      tagged[str(u), str(m)] = set(str(text).split(", "))
  assert tagged.keys() == on_rated.keys()
  for key, expected in on_rated.items():
    if not any(", " in t for t in expected):
      assert tagged[key] == expected, key


def test_ml_latest_small_temporal_split(latest):
  _, data = latest
  split = splits.temporal(data)
  assert len(split.valid) > 0 and len(split.test) > 0
