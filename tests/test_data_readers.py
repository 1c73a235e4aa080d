"""Readers: each format on small hand-written files, the real ml-100k release, and bad input."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from recjax.data import readers
from recjax.data import registry
from recjax.data.readers import DataFormatError, MissingDataError
from tests.datasets import require_data_dir


def write(path: pathlib.Path, text: str, encoding: str = "utf-8") -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding=encoding)
  return path


def rows(data) -> list[list[str]]:
  """Each user's sequence as raw item ids."""
  return [[str(data.item_ids[i]) for i in seq] for seq in data.sequences]


def check_canonical(data) -> None:
  """Invariants every reader must satisfy."""
  seq = data.sequences
  assert seq.offsets[0] == 0 and seq.offsets[-1] == len(seq.values)
  assert np.all(seq.lengths > 0)
  assert seq.values.dtype == np.int32
  assert seq.values.min() >= 1 and seq.values.max() == data.num_items
  assert len(np.unique(seq.values)) == data.num_items  # every catalogue item occurs
  assert data.item_ids[0] == "<pad>"
  assert len(set(data.item_ids.tolist())) == data.num_items + 1
  assert len(data.user_ids) == data.num_users == len(set(data.user_ids.tolist()))
  # Item ids are given in order of first appearance in the concatenated sequences.
  _, first = np.unique(seq.values, return_index=True)
  assert np.all(np.diff(first) > 0)
  if data.timestamps is not None:
    assert len(data.timestamps) == len(seq.values)
  if data.ratings is not None:
    assert data.ratings.dtype == np.float32 and len(data.ratings) == len(seq.values)
  for field, column in data.item_text.items():
    assert len(column) == data.num_items + 1, field
  for field, column in data.user_features.items():
    assert len(column) == data.num_users, field


# ----------------------------------------------------------------------------------------------
# Text cleaning.


@pytest.mark.parametrize("raw,clean", [
    ("AT&amp;T 210 Corded Phone", "AT&T 210 Corded Phone"),
    ("Sid Meier&#39;s Civilization IV", "Sid Meier's Civilization IV"),
    ("pH 0-14, Â± 0.1", "pH 0-14, ± 0.1"),
    ("Filament Ã˜ 1.75mm", "Filament Ø 1.75mm"),
    ("Easy RepRapÂ Brand", "Easy RepRap Brand"),
    ("itâ€™s", "it’s"),
    ("  Misérables,\tLes  ", "Misérables, Les"),
    ("Café–Bar", "Café–Bar"),
    # HTML: entities (also double-escaped), tags (block tags become a space); "<" alone stays.
    ("<b>Pen & Paper</b>\x00", "Pen & Paper"),
    ("AT&amp;amp;T <b>Phone</b><br/>x", "AT&T Phone x"),
    ("&lt;i&gt;Dune&lt;/i&gt; &amp; more", "Dune & more"),
    ("5 < 6 and 7 > 3", "5 < 6 and 7 > 3"),
    ("I <3 it", "I <3 it"),
    # Control characters, bidi overrides / isolates / marks and byte-order marks are removed.
    ("Cafe \u202e\u2066rtl", "Cafe rtl"),
    ("a\x07b\x1bc\x7fd\x9ce", "abcde"),
    ("\ufeffTitle\u200e \u2069", "Title"),
    ("tab\there\nnew  line\u00a0nbsp", "tab here new line nbsp"),
    # Mojibake: one rule for every lead byte; a C1 byte that cp1252 leaves undefined (0x9d) too.
    ("caf\u00c3\u00a9 it\u00e2\u20ac\u2122s", "caf\u00e9 it\u2019s"),
    ("\u00e2\u20ac\x9cquoted\u00e2\u20ac\x9d", "\u201cquoted\u201d"),
    ("\u00f0\u0178\u02dc\u20ac smile", "\U0001f600 smile"),
    ("caf\u00c3\u00a9\u2013bar", "caf\u00e9\u2013bar"),  # the dash after "é" is a real dash
    ("", ""),
])
def test_clean_text(raw, clean):
  assert readers.clean_text(raw) == clean


def test_one_clean_text():
  from recjax.text import item_text  # pylint: disable=g-import-not-at-top
  assert item_text.clean_text is readers.clean_text


# ----------------------------------------------------------------------------------------------
# Each format on a small file.


def test_movielens_100k_orders_by_time_with_stable_ties(tmp_path):
  ratings = write(tmp_path / "u.data", "7\t30\t5\t300\n"
                  "5\t10\t4\t200\n"
                  "7\t20\t3\t100\n"
                  "7\t40\t4\t300\n"  # same time as item 30: file order decides
                  "5\t20\t1\t100\n")
  items = write(tmp_path / "u.item", "".join(
      f"{i}|Movie {i} (1995)|01-Jan-1995||http://x|" + "|".join(
          "1" if g == i % 19 else "0" for g in range(19)) + "\n" for i in (10, 20, 30, 40)
  ).replace("Movie 10", "Misérables, Les"), encoding="latin-1")
  users = write(tmp_path / "u.user", "5|24|M|technician|85711\n7|53|F|other|94043\n")
  data = readers.read_movielens_100k(ratings, items, users)
  check_canonical(data)
  assert data.user_ids.tolist() == ["7", "5"]  # first appearance in the file
  assert rows(data) == [["20", "30", "40"], ["20", "10"]]
  assert data.timestamps.tolist() == [100, 300, 300, 100, 200]
  assert data.ratings.tolist() == [3, 5, 4, 1, 4]
  assert data.item_ids.tolist() == ["<pad>", "20", "30", "40", "10"]
  assert data.item_text["title"][4] == "Misérables, Les (1995)"
  assert data.item_text["genres"][1] == readers.ML100K_GENRES[20 % 19]
  assert data.user_features["age"].tolist() == [53, 24]
  assert data.user_features["occupation"].tolist() == ["other", "technician"]

  positive = readers.read_movielens_100k(ratings, min_rating=4)
  assert rows(positive) == [["30", "40"], ["10"]]
  assert positive.ratings.tolist() == [5, 4, 4]
  assert positive.item_text == {}

  in_file_order = readers.read_movielens_100k(ratings, order="file")
  assert rows(in_file_order) == [["30", "20", "40"], ["10", "20"]]
  assert in_file_order.ratings.tolist() == [5, 3, 4, 4, 1]
  with pytest.raises(ValueError, match="unknown order 'random'"):
    readers.read_movielens_100k(ratings, order="random")


def test_movielens_1m_format(tmp_path):
  ratings = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n"
                  "2::1193::2::978298413\n")
  movies = write(tmp_path / "movies.dat", "661::James and the Giant Peach (1996)::"
                 "Animation|Children's|Musical\n1193::One Flew Over the Cuckoo's Nest (1975)"
                 "::Drama\n3845::Et Dieu&#8230;Créa la Femme (1956)::Drama\n",
                 encoding="latin-1")
  users = write(tmp_path / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
  data = readers.read_movielens_1m(ratings, movies, users)
  check_canonical(data)
  assert rows(data) == [["1193", "661"], ["1193"]]
  assert data.ratings.tolist() == [5, 3, 2]
  assert data.item_text["genres"][2] == "Animation, Children's, Musical"
  assert data.user_features["occupation"].tolist() == ["K-12 student", "self-employed"]
  assert data.user_features["age"].tolist() == [1, 56]
  assert readers.read_movielens_1m(ratings, min_rating=3).num_interactions == 2
  titles = readers.read_item_text({"file": movies, "sep": "::", "encoding": "latin-1",
                                   "columns": ["item_id", "title", "-"]})
  assert titles["title"]["3845"] == "Et Dieu…Créa la Femme (1956)"


def test_sequences_with_text_join(tmp_path):
  seqs = write(tmp_path / "seq.txt", "u1 5 3 5\n\nu2 3 9\nu1 7\n")
  write(tmp_path / "titles.txt", "4||Five\n2||Three\n")
  write(tmp_path / "meta.json", json.dumps({"3": {"brand": "B", "tags": ["x", "y"]},
                                            "9": "nine"}))
  data = readers.read_sequences(seqs, numeric_ids=False, item_text=[
      {"file": tmp_path / "titles.txt", "sep": "||", "columns": ["item_id", "title"],
       "id_offset": 1},
      {"file": tmp_path / "meta.json", "format": "json", "field": "title"},
  ])
  check_canonical(data)
  assert data.user_ids.tolist() == ["u1", "u2"]
  assert rows(data) == [["5", "3", "5", "7"], ["3", "9"]]  # a user's lines concatenate
  assert data.timestamps is None
  assert data.item_text["title"].tolist() == ["", "Five", "Three", "", "nine"]
  assert data.item_text["brand"].tolist() == ["", "", "B", "", ""]
  assert data.item_text["tags"][2] == "x, y"


def test_pairs_with_columns_and_header(tmp_path):
  path = write(tmp_path / "events.csv", "user,item,stars,time\n"
               "a,x,5,30\nb,y,4,10\na,y,2,20\na,z,4,10\n")
  data = readers.read_pairs(path, sep=",", header=True,
                            columns=["user", "item", "rating", "timestamp"], min_rating=3)
  check_canonical(data)
  assert rows(data) == [["z", "x"], ["y"]]
  assert data.timestamps.tolist() == [10, 30, 10]
  assert data.ratings.tolist() == [4, 5, 4]
  plain = readers.read_pairs(write(tmp_path / "Video.txt", "1 6\n1 2\n2 6\n"), numeric_ids=True)
  assert rows(plain) == [["6", "2"], ["6"]]
  assert plain.ratings is None
  assert plain.item_ids.tolist() == ["<pad>", "6", "2"]


def test_lcrec_json(tmp_path):
  inter = write(tmp_path / "X.inter.json", json.dumps({"0": [0, 1, 2], "1": [2, 3]}))
  item = write(tmp_path / "X.item.json", json.dumps({str(i): {
      "title": f"T&amp;{i}", "description": "", "brand": "b", "categories": "c1, c2"}
      for i in range(4)}))
  data = readers.read_lcrec_json(inter, item)
  check_canonical(data)
  assert rows(data) == [["0", "1", "2"], ["2", "3"]]
  assert data.item_text["title"].tolist() == ["", "T&0", "T&1", "T&2", "T&3"]
  assert set(data.item_text) == {"title", "description", "brand", "categories"}


def test_atomic_inter(tmp_path):
  inter = write(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\t"
                "timestamp:float\nu1\ti1\t5\t881250949\nu2\ti2\t1\t5\nu1\ti2\t4\t881250940.0\n")
  item = write(tmp_path / "x.item", "item_id:token\ttitle:token_seq\tprice:float\n"
               "i1\tFirst &amp; best\t9.5\ni2\tSecond\t\n")
  data = readers.read_atomic(inter, item)
  check_canonical(data)
  assert rows(data) == [["i2", "i1"], ["i2"]]
  assert data.timestamps.tolist() == [881250940, 881250949, 5]
  assert data.ratings.tolist() == [4, 5, 1]
  assert data.item_text["title"].tolist() == ["", "Second", "First & best"]
  assert readers.read_atomic(inter, min_rating=4).num_users == 1


def test_atomic_sequential_rebuilds_full_sequences(tmp_path):
  head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
  test = write(tmp_path / "x.test.inter", head + "0\t1 2 3\t4\n1\t\t6\n2\t8 9\t7\n")
  # User 2's test history was capped: the validation row still holds the older item 5.
  valid = write(tmp_path / "x.valid.inter", head + "0\t1 2\t3\n2\t5 8\t9\n")
  data = readers.read_atomic(test_inter=test, valid_inter=valid)
  check_canonical(data)
  assert rows(data) == [["1", "2", "3", "4"], ["6"], ["5", "8", "9", "7"]]
  assert data.ratings is None
  with pytest.raises(ValueError, match="exactly one of 'inter'"):
    readers.read_atomic()


def test_from_interactions():
  data = readers.from_interactions(
      "mine", users=["b", "a", "b", "a"], items=["x", "y", "y", "x"], timestamps=[5, 3, 1, 3],
      item_text={"title": {"x": "Ex"}}, user_features={"age": {"a": 30}})
  check_canonical(data)
  assert data.user_ids.tolist() == ["b", "a"]
  assert rows(data) == [["y", "x"], ["y", "x"]]
  assert data.item_text["title"].tolist() == ["", "", "Ex"]
  assert data.user_features["age"].tolist() == [-1, 30]
  assert data.ratings is None
  rated = readers.from_interactions("mine", users=["b", "a", "b", "a"],
                                    items=["x", "y", "y", "x"], timestamps=[5, 3, 1, 3],
                                    ratings=[1, 2, 3, 4])
  assert rated.ratings.tolist() == [3, 1, 2, 4]  # reordered with the items
  with pytest.raises(ValueError, match="equal lengths"):
    readers.from_interactions("bad", ["a"], ["x", "y"])


# ----------------------------------------------------------------------------------------------
# Bad input: every error names the file, the line (where there is one) and the problem.

BAD_LINE_CASES = {
    "ml100k_field_count": ("u.data", "1\t2\t3\t4\n1\t2\t3\n", 2, "expected 4 fields"),
    "ml100k_non_numeric_user": ("u.data", "1\t2\t3\t4\nabc\t2\t3\t4\n", 2,
                                "user id must be an integer, got 'abc'"),
    "ml100k_bad_rating": ("u.data", "1\t2\tfive\t4\n", 1, "rating must be a number"),
    "ml100k_bad_time": ("u.data", "1\t2\t3\tnoon\n", 1, "timestamp must be a number"),
    "seq_one_field": ("seq.txt", "1 2 3\n\n7\n", 3, "at least 2 fields"),
    "seq_non_numeric_item": ("seq.txt", "1 2 3\n2 4 x5\n", 2, "item id must be an integer"),
    "pairs_three_fields": ("pairs.txt", "1 2\n1 2 3\n", 2, "expected 2 fields 'user item'"),
    "atomic_field_count": ("x.inter", "user_id:token\titem_id:token\nu1\ti1\textra\n", 2,
                           "expected 2 fields"),
    "atomic_unknown_column": ("x.inter", "user_id:token\titem_id:token\treview:token_seq\n", 1,
                              "unknown header column 'review'"),
    "atomic_unknown_type": ("x.inter", "user_id:token\titem_id:blob\n", 1,
                            "unknown type 'blob'"),
    "atomic_not_name_type": ("x.inter", "user_id\titem_id:token\n", 1, "is not 'name:type'"),
    "atomic_missing_column": ("x.inter", "user_id:token\ttimestamp:float\nu\t1\n", 1,
                              "missing column 'item_id:token'"),
    "atomic_bad_timestamp": ("x.inter", "user_id:token\titem_id:token\ttimestamp:float\n"
                             "u\ti\tyesterday\n", 2, "timestamp must be a number"),
    "lcrec_bad_json": ("x.inter.json", '{"0": [1, 2],\n "1": [3,, 4]}', 2, "invalid JSON"),
}


def read_by_name(path: pathlib.Path):
  if path.name == "u.data":
    return readers.read_movielens_100k(path)
  if path.name == "seq.txt":
    return readers.read_sequences(path, numeric_ids=True)
  if path.name == "pairs.txt":
    return readers.read_pairs(path, numeric_ids=True)
  if path.name == "x.inter":
    return readers.read_atomic(path)
  if path.name == "x.inter.json":
    return readers.read_lcrec_json(path)
  raise AssertionError(path)


@pytest.mark.parametrize("case", sorted(BAD_LINE_CASES))
def test_bad_lines_name_file_and_line(tmp_path, case):
  name, text, line, problem = BAD_LINE_CASES[case]
  path = write(tmp_path / name, text)
  with pytest.raises(DataFormatError, match=problem) as info:
    read_by_name(path)
  assert info.value.path == str(path)
  assert info.value.line == line
  assert str(info.value).startswith(f"{path}:{line}: ")


@pytest.mark.parametrize("name", ["u.data", "seq.txt", "pairs.txt", "x.inter", "x.inter.json"])
def test_empty_files(tmp_path, name):
  path = write(tmp_path / name, "" if name != "x.inter.json" else "{}")
  with pytest.raises(DataFormatError, match="empty|no interactions|no rows") as info:
    read_by_name(path)
  assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["u.data", "seq.txt", "x.inter", "x.inter.json"])
def test_missing_files(tmp_path, name):
  with pytest.raises(MissingDataError, match="file not found") as info:
    read_by_name(tmp_path / name)
  assert isinstance(info.value, ValueError)
  assert str(tmp_path / name) in str(info.value)


def test_other_bad_input(tmp_path):
  with pytest.raises(DataFormatError, match="no interactions left"):
    readers.read_movielens_100k(write(tmp_path / "u.data", "1\t2\t1\t4\n"), min_rating=4)
  with pytest.raises(DataFormatError, match="cannot decode as utf-8.*encoding"):
    readers.read_sequences(write(tmp_path / "latin.txt", "1 Misérables\n", encoding="latin-1"))
  with pytest.raises(DataFormatError, match="expected a list of integer item ids"):
    readers.read_lcrec_json(write(tmp_path / "a.inter.json", '{"0": [1, "2"]}'))
  with pytest.raises(DataFormatError, match="expected a JSON object"):
    readers.read_lcrec_json(write(tmp_path / "b.inter.json", "[[1, 2]]"))
  u_item = write(tmp_path / "u.item", "1|Toy Story|x||url|0|1\n")
  with pytest.raises(DataFormatError, match=r"u.item:1: expected 24 fields"):
    readers.read_movielens_100k(write(tmp_path / "u.data", "1\t1\t5\t4\n"), u_item)
  head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
  test = write(tmp_path / "t.inter", head + "0\t1 2 3\t4\n")
  for valid_rows, problem in [("0\t1 2\t9\n", "validation target '9'"),
                              ("0\t7 2\t3\n", "does not end with"),
                              ("5\t1\t2\n", "no test row")]:
    with pytest.raises(DataFormatError, match=problem) as info:
      readers.read_atomic(test_inter=test, valid_inter=write(tmp_path / "v.inter",
                                                             head + valid_rows))
    assert info.value.line == 2
  with pytest.raises(DataFormatError, match="second row"):
    readers.read_atomic(test_inter=write(tmp_path / "d.inter", head + "0\t1\t2\n0\t1\t3\n"))
  with pytest.raises(ValueError, match=r"unknown item_text key\(s\) \['colums'\]"):
    readers.read_item_text({"file": u_item, "colums": ["item_id"]})


def test_negative_numeric_ids_are_rejected(tmp_path):
  cases = [
      (lambda p: readers.read_pairs(p, numeric_ids=True), "pairs.txt", "1 2\n-3 4\n",
       "user id must be a non-negative integer, got '-3'"),
      (lambda p: readers.read_pairs(p, numeric_ids=True), "pairs.txt", "1 2\n3 -4\n",
       "item id must be a non-negative integer, got '-4'"),
      (lambda p: readers.read_sequences(p, numeric_ids=True), "seq.txt", "1 2 3\n2 4 -3 5\n",
       "item id must be a non-negative integer, got '-3'"),
      (lambda p: readers.read_sequences(p, numeric_ids=True), "seq.txt", "1 2\n-2 4\n",
       "user id must be a non-negative integer"),
      (readers.read_movielens_100k, "u.data", "1\t2\t3\t4\n1\t-2\t3\t4\n",
       "item id must be a non-negative integer"),
  ]
  for read, name, text, problem in cases:
    path = write(tmp_path / name, text)
    with pytest.raises(DataFormatError, match=problem) as info:
      read(path)
    assert (info.value.path, info.value.line) == (str(path), 2)
  # Token ids are not numbers: "-3" is just a name there.
  assert readers.read_pairs(write(tmp_path / "t.txt", "-3 a\n")).user_ids.tolist() == ["-3"]


def test_byte_order_mark_is_not_part_of_the_first_id(tmp_path):
  bom = "\ufeff"
  tokens = readers.read_pairs(write(tmp_path / "p.txt", bom + "ann lamp\nann mug\nbob mug\n"))
  assert tokens.user_ids.tolist() == ["ann", "bob"]
  seqs = readers.read_sequences(write(tmp_path / "s.txt", bom + "u1 a b\nu2 b\n"))
  assert seqs.user_ids.tolist() == ["u1", "u2"] and seqs.item_ids[1] == "a"
  numeric = readers.read_sequences(write(tmp_path / "n.txt", bom + "1 5 6\n"), numeric_ids=True)
  assert numeric.user_ids.tolist() == ["1"]
  with_header = readers.read_pairs(write(tmp_path / "h.csv", bom + "user,item\nann,lamp\n"),
                                   sep=",", header=True)
  assert with_header.user_ids.tolist() == ["ann"]
  lcrec = readers.read_lcrec_json(write(tmp_path / "x.inter.json", bom + '{"7": [1, 2]}'))
  assert lcrec.user_ids.tolist() == ["7"]
  atomic = readers.read_atomic(write(tmp_path / "x.inter",
                                     bom + "user_id:token\titem_id:token\nu\ti\n"))
  assert atomic.user_ids.tolist() == ["u"]


def test_report_counts_items_missing_from_the_item_table(tmp_path):
  seqs = write(tmp_path / "seq.txt", "u1 a b c\nu2 c d\n")
  write(tmp_path / "titles.tsv", "a\tApple\nb\t\nd\tDate\nz\tNot an item\n")
  write(tmp_path / "brands.tsv", "a\tAcme\n")
  data = readers.read_sequences(seqs, item_text=[
      {"file": tmp_path / "titles.tsv"},
      {"file": tmp_path / "brands.tsv", "columns": ["item_id", "brand"]}])
  assert data.item_text["title"].tolist() == ["", "Apple", "", "", "Date"]
  assert data.report == [
      "3 of 4 items have no entry for 'brand' in the item table (left empty)",
      "1 of 4 items have no entry for 'title' in the item table (left empty)",
      "1 of 4 items have an empty title in the item table",
  ]
  assert readers.read_sequences(seqs).report == []  # no item table: nothing to report


# ----------------------------------------------------------------------------------------------
# The real ml-100k release.


@pytest.fixture(scope="module")
def ml100k():
  root = require_data_dir("ml-100k")
  d = root / "ml-100k"
  return readers.read_movielens_100k(d / "u.data", d / "u.item", d / "u.user")


def test_ml100k_counts_order_and_text(ml100k):
  check_canonical(ml100k)
  assert (ml100k.num_users, ml100k.num_items, ml100k.num_interactions) == (943, 1682, 100_000)
  seq = ml100k.sequences
  user_of = np.repeat(np.arange(ml100k.num_users), seq.lengths)
  same_user = user_of[1:] == user_of[:-1]
  assert np.all(np.diff(ml100k.timestamps)[same_user] >= 0)
  assert seq.lengths.min() == 20  # every ml-100k user rated at least 20 movies
  titles = dict(zip(ml100k.item_ids.tolist(), ml100k.item_text["title"].tolist()))
  assert titles["1"] == "Toy Story (1995)"
  assert titles["543"] == "Misérables, Les (1995)"  # latin-1 decoded
  genres = dict(zip(ml100k.item_ids.tolist(), ml100k.item_text["genres"].tolist()))
  assert genres["1"] == "Animation, Children's, Comedy"
  assert set(ml100k.user_features) == {"age", "gender", "occupation", "zip_code"}
  assert set(ml100k.user_features["gender"].tolist()) == {"M", "F"}


def test_ml100k_ratings(ml100k):
  d = require_data_dir("ml-100k") / "ml-100k"
  raw = np.loadtxt(d / "u.data", dtype=np.int64)  # user item rating timestamp
  ratings = ml100k.ratings
  assert ratings.dtype == np.float32 and len(ratings) == 100_000
  assert set(np.unique(ratings).tolist()) == {1, 2, 3, 4, 5}
  assert np.bincount(ratings.astype(np.int64)).tolist() == np.bincount(raw[:, 2]).tolist()
  # The first user's ratings are its u.data lines in chronological order (stable on file order).
  first = raw[raw[:, 0] == int(ml100k.user_ids[0])]
  first = first[np.argsort(first[:, 3], kind="stable")]
  n = ml100k.sequences.lengths[0]
  assert n == len(first)
  assert ml100k.item_ids[ml100k.sequences[0]].tolist() == [str(i) for i in first[:, 1]]
  assert ratings[:n].tolist() == first[:, 2].tolist()
  assert ml100k.timestamps[:n].tolist() == first[:, 3].tolist()

  # Ratings stay aligned with (user, item) through a filter that drops and renumbers items.
  filtered, report = registry.filter_interactions(ml100k, min_user_interactions=50,
                                                  min_item_interactions=20, k_core=True)
  assert 0 < report.interactions_dropped < 100_000
  assert filtered.ratings.dtype == np.float32
  assert len(filtered.ratings) == filtered.num_interactions == report.interactions_after
  by_pair = {(u, i): r for u, i, r, _ in raw.tolist()}  # ml-100k rates each pair once
  user_of = np.repeat(filtered.user_ids, filtered.sequences.lengths)
  items = filtered.item_ids[filtered.sequences.values]
  expected = [by_pair[int(u), int(i)] for u, i in zip(user_of, items)]
  assert filtered.ratings.tolist() == expected


def test_ml100k_positive_ratings():
  d = require_data_dir("ml-100k") / "ml-100k"
  positive = readers.read_movielens_100k(d / "u.data", min_rating=4)
  assert positive.num_interactions == 55_375
  assert positive.num_users == 942
  assert positive.ratings.min() == 4 and len(positive.ratings) == 55_375
