"""Registry: built-in and config-only specs, root resolution, filters and MovieLens download."""
from __future__ import annotations

import hashlib
import json
import pathlib
import socket
import stat
import zipfile

import numpy as np
import pytest

from recjax.data import download
from recjax.data import registry
from recjax.data.readers import MissingDataError
from tests.datasets import require_data_dir

# name -> (users, items, interactions), from ../shared/data/README.md.
PUBLISHED_COUNTS = {
    "ml-100k": (943, 1682, 100_000),
    "ml-1m-pos": (6038, 3533, 575_281),
    "amazon_beauty": (22_363, 12_101, 198_502),
    "amazon_video": (31_013, 23_715, 287_107),
    "amazon_office": (4905, 2420, 53_258),
    "amazon_scientific": (8317, 4344, 58_492),
    "amazon_games6k": (50_546, 16_859, 440_264),
}
TEXT_FIELDS = {
    "ml-100k": {"title", "genres", "release_date"},
    "ml-1m-pos": {"title", "title_with_year", "genres"},
    "amazon_beauty": set(),
    "amazon_video": set(),
    "amazon_office": {"title", "description", "brand", "categories"},
    "amazon_scientific": {"title", "description", "brand", "categories"},
    "amazon_games6k": {"title"},
}
# Items without a title in the release (amazon_office has 3).
EMPTY_TITLES = {"ml-100k": 0, "ml-1m-pos": 0, "amazon_office": 3, "amazon_scientific": 0,
                "amazon_games6k": 0}


@pytest.fixture(scope="module")
def real():
  root = require_data_dir(*PUBLISHED_COUNTS)
  return {name: registry.load_dataset({"name": name}, root) for name in PUBLISHED_COUNTS}


@pytest.mark.parametrize("name", sorted(PUBLISHED_COUNTS))
def test_real_dataset_counts_and_text(real, name):
  data = real[name]
  assert (data.num_users, data.num_items, data.num_interactions) == PUBLISHED_COUNTS[name]
  assert data.sequences.values.min() == 1 and data.sequences.values.max() == data.num_items
  assert data.item_ids[0] == "<pad>"
  assert set(data.item_text) == TEXT_FIELDS[name]
  if "title" in data.item_text:
    assert np.sum(data.item_text["title"][1:] == "") == EMPTY_TITLES[name]


def test_real_dataset_details(real):
  # Beauty.txt and ml-1m-pos list users in file order; Beauty's item ids were already assigned in
  # order of first appearance, so they survive unchanged.
  beauty = real["amazon_beauty"]
  assert beauty.user_ids[:3].tolist() == ["1", "2", "3"]
  assert beauty.item_ids[1:].astype(int).tolist() == list(range(1, beauty.num_items + 1))
  assert [beauty.item_ids[i] for i in beauty.sequences[0]] == ["1", "2", "3", "4", "5"]
  video = real["amazon_video"]
  assert [video.item_ids[i] for i in video.sequences[0][:3]] == ["6393", "13504", "14087"]
  ml = real["ml-1m-pos"]
  titles = dict(zip(ml.item_ids.tolist(), ml.item_text["title"].tolist()))
  assert titles["1"] == "Toy Story" and titles["11"] == "The American President"
  genres = dict(zip(ml.item_ids.tolist(), ml.item_text["genres"].tolist()))
  assert genres["1"] == "Animation, Children's, Comedy"
  office = real["amazon_office"]
  assert office.item_text["title"][office.sequences[0][2]].startswith("AT&T 210 Corded Phone")
  games = real["amazon_games6k"]
  first_user = [games.item_ids[i] for i in games.sequences[0]]
  assert first_user == [str(i) for i in range(15)]  # test history 0..13 + test target 14
  assert games.item_text["title"][games.sequences[0][0]] == "Fire Emblem: The Sacred Stones"
  assert games.timestamps is None


def test_ml1m_real_metadata_with_made_up_ratings(tmp_path):
  # ratings.dat is absent from the shared data; read the real movies.dat/users.dat against a
  # small made-up ratings file.
  root = require_data_dir("ml-1m")
  (tmp_path / "ratings.dat").write_text("1::3845::5::978300760\n1::1320::4::978300700\n"
                                        "6040::1::3::978300000\n")
  data = registry.load_dataset({
      "name": "ml-1m", "dir": str(tmp_path),
      "files": {"movies": str(root / "ml-1m" / "movies.dat"),
                "users": str(root / "ml-1m" / "users.dat")}})
  assert data.num_users == 2 and data.num_items == 3
  assert data.item_text["title"].tolist() == [
      "", "Alien³ (1992)", "And God Created Woman (Et Dieu…Créa la Femme) (1956)",
      "Toy Story (1995)"]
  assert data.user_features["gender"].tolist() == ["F", "M"]
  assert data.user_features["occupation"].tolist() == ["K-12 student", "doctor/health care"]


def closed_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_ml1m_absent_gives_clear_message(tmp_path):
  url = f"http://127.0.0.1:{closed_port()}/ml-1m.zip"
  with pytest.raises(MissingDataError) as info:
    registry.load_dataset({"name": "ml-1m", "download": {"url": url, "timeout_s": 5}}, tmp_path)
  message = str(info.value)
  for path in ("ratings.dat", "movies.dat", "users.dat"):
    assert f"put {path} at {tmp_path / 'ml-1m' / path}" in message
  assert f"could not download {url}" in message
  assert "ml-1m-pos" in message
  with pytest.raises(MissingDataError, match="Automatic download is off"):
    registry.load_dataset("ml-1m", tmp_path, allow_download=False)


def test_ml1m_in_shared_data_names_ratings_dat():
  root = require_data_dir("ml-1m")
  if (root / "ml-1m" / "ratings.dat").exists():
    pytest.skip("this data root has the full ml-1m release")
  with pytest.raises(MissingDataError, match=r"put ratings.dat at .*ml-1m/ratings.dat") as info:
    registry.load_dataset("ml-1m", root, allow_download=False)
  assert "put movies.dat" not in str(info.value)  # only the absent file is listed


# ----------------------------------------------------------------------------------------------
# Specs.


def test_builtins_listed_and_resolvable():
  assert registry.list_datasets() == sorted([
      "ml-100k", "ml-1m", "ml-1m-pos", "ml-latest-small", "amazon_beauty", "amazon_video",
      "amazon_office", "amazon_scientific", "amazon_games6k", "amazon2018_gift_cards",
      "amazon2018_all_beauty", "synthetic"])
  for name in registry.list_datasets():
    spec = registry.get_spec(name)
    assert spec["name"] == name and spec["format"] in registry.FORMATS
    json.dumps(spec)  # pure data


@pytest.mark.parametrize("spec,match", [
    ({"name": "ml-10k"}, r"unknown dataset 'ml-10k'; built-in datasets: \['amazon2018_all"),
    ({"name": "x", "format": "csv", "dir": "x", "files": {}},
     r"unknown format 'csv'; valid formats: \['amazon_reviews', 'atomic'"),
    ({"name": "ml-100k", "min_ratin": 4}, r"unknown spec key\(s\) \['min_ratin'\].*'min_rating'"),
    ({"name": "ml-100k", "files": {"ratingz": "u.data"}},
     r"unknown file role\(s\) \['ratingz'\].*\['ratings', 'items', 'users'\]"),
    ({"name": "ml-100k", "preprocess": {"min_users": 5}},
     r"unknown preprocess key\(s\) \['min_users'\]"),
    ({"name": "x", "format": "pairs", "dir": "x", "files": {}}, r"needs file role\(s\) \["
     r"'interactions'\]"),
    ({"name": "x", "format": "pairs", "files": {"interactions": "a"}}, "has no 'dir'"),
    ({"name": "synthetic", "dir": "x"}, r"unknown spec key\(s\) \['dir'\]"),
    ({"format": "pairs"}, "has no 'name'"),
])
def test_bad_specs(spec, match):
  with pytest.raises(ValueError, match=match):
    registry.load_dataset(spec, "/nonexistent")


def test_root_resolution(tmp_path, monkeypatch):
  (tmp_path / "ml-100k").mkdir()
  (tmp_path / "ml-100k" / "u.data").write_text("1\t10\t5\t2\n1\t11\t5\t1\n")
  spec = {"name": "ml-100k", "files": {"items": None, "users": None}, "download": None}
  monkeypatch.delenv("RECJAX_DATA_DIR", raising=False)
  with pytest.raises(MissingDataError, match=r"set RECJAX_DATA_DIR.*<root>/ml-100k/u.data"):
    registry.load_dataset(spec)
  with pytest.raises(MissingDataError, match="no data directory"):
    registry.load_dataset(spec, "")  # "" (a config's default) means "not set"
  monkeypatch.setenv("RECJAX_DATA_DIR", str(tmp_path))
  assert registry.load_dataset(spec).num_interactions == 2
  assert registry.load_dataset(spec, "").num_interactions == 2
  monkeypatch.delenv("RECJAX_DATA_DIR")
  absolute = {**spec, "dir": str(tmp_path / "ml-100k")}  # an absolute dir needs no root
  assert registry.load_dataset(absolute).num_interactions == 2
  with pytest.raises(MissingDataError, match="put u.data at /nonexistent/ml-100k/u.data"):
    registry.load_dataset(spec, "/nonexistent")


def test_new_datasets_by_config_only(tmp_path):
  shop = tmp_path / "my_shop"
  shop.mkdir()
  (shop / "events.tsv").write_text("user\titem\tts\nann\tlamp\t20\nbob\tmug\t5\nann\tmug\t10\n")
  (shop / "items.tsv").write_text("lamp\tDesk lamp\nmug\tCoffee mug\n")
  data = registry.load_dataset({
      "name": "my_shop", "format": "pairs", "dir": "my_shop",
      "files": {"interactions": "events.tsv"}, "sep": "\t", "header": True,
      "columns": ["user", "item", "timestamp"],
      "item_text": [{"file": "items.tsv", "columns": ["item_id", "title"]},
                    {"file": "absent.json", "format": "json", "optional": True}],
  }, tmp_path)
  assert [[data.item_text["title"][i] for i in s] for s in data.sequences] == [
      ["Coffee mug", "Desk lamp"], ["Coffee mug"]]
  assert data.report == [f"optional item-text file {shop / 'absent.json'} is absent; skipped"]

  (tmp_path / "rb").mkdir()
  (tmp_path / "rb" / "rb.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                                            "1\t7\t2\n1\t8\t1\n")
  atomic = registry.load_dataset({"name": "rb", "format": "atomic", "dir": "rb",
                                  "files": {"inter": "rb.inter"}}, tmp_path)
  assert atomic.item_ids.tolist() == ["<pad>", "8", "7"]

  with pytest.raises(MissingDataError, match="file not found"):
    registry.load_dataset({"name": "rb", "format": "atomic", "dir": "rb",
                           "files": {"inter": "rb.inter"},
                           "item_text": [{"file": "absent.txt"}]}, tmp_path)


def test_builtin_overrides_field_by_field():
  root = require_data_dir("ml-100k")
  positive = registry.load_dataset({"name": "ml-100k", "min_rating": 4,
                                    "files": {"users": None}}, root)
  assert positive.num_interactions == 55_375
  assert positive.user_features == {} and "title" in positive.item_text


def test_config_dict_specs():
  ml_collections = pytest.importorskip("ml_collections")
  spec = ml_collections.ConfigDict({"name": "synthetic", "num_users": 50, "num_items": 40,
                                    "num_clusters": 4})
  data = registry.load_dataset(spec)
  assert data.num_users == 50 and data.num_items == 40


# ----------------------------------------------------------------------------------------------
# Filters.


def test_filter_reports_and_k_core():
  data = registry.load_dataset({"name": "synthetic", "num_users": 300, "num_items": 400,
                                "num_clusters": 8, "min_length": 2, "max_length": 12})
  one_pass, report = registry.filter_interactions(data, min_user_interactions=5,
                                                  min_item_interactions=8)
  assert report.rounds == 1
  assert report.users_after == one_pass.num_users and report.items_after == one_pass.num_items
  assert report.users_dropped > 0 and report.items_dropped > 0
  assert report.interactions_after == one_pass.num_interactions
  assert one_pass.sequences.lengths.min() >= 5

  core, core_report = registry.filter_interactions(data, 5, 8, k_core=True)
  assert core_report.rounds > 1
  assert core.sequences.lengths.min() >= 5
  assert np.bincount(core.sequences.values)[1:].min() >= 8
  # Surviving rows keep their raw ids, text and timestamps.
  rows = {u: i for i, u in enumerate(data.user_ids.tolist())}
  for u in (0, core.num_users - 1):
    original = rows[core.user_ids[u]]
    original_items = [data.item_ids[i] for i in data.sequences[original]]
    kept = [core.item_ids[i] for i in core.sequences[u]]
    assert set(kept) <= set(original_items)
  titles = dict(zip(data.item_ids.tolist(), data.item_text["title"].tolist()))
  assert all(titles[i] == t for i, t in zip(core.item_ids[1:], core.item_text["title"][1:]))
  assert len(core.timestamps) == core.num_interactions

  loaded, load_report = registry.load_dataset_with_report({
      "name": "synthetic", "num_users": 300, "num_items": 400, "num_clusters": 8,
      "min_length": 2, "max_length": 12,
      "preprocess": {"min_user_interactions": 5, "min_item_interactions": 8, "k_core": True}})
  assert load_report == core_report
  np.testing.assert_array_equal(loaded.sequences.values, core.sequences.values)


# ----------------------------------------------------------------------------------------------
# MovieLens download: checksums, safe extraction, fetching (file:// URLs only; no network here).


def make_zip(path: pathlib.Path, members: dict[str, bytes], symlinks: dict[str, str] = None):
  with zipfile.ZipFile(path, "w") as zf:
    for name, content in members.items():
      zf.writestr(name, content)
    for name, target in (symlinks or {}).items():
      info = zipfile.ZipInfo(name)
      info.external_attr = (stat.S_IFLNK | 0o777) << 16
      zf.writestr(info, target)
  return path


def test_movielens_checksums_are_recorded():
  for name in ("ml-100k", "ml-1m"):
    source = download.MOVIELENS_ZIPS[name]
    assert source["url"] == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
    assert len(source["sha256"]) == 64 and int(source["sha256"], 16) >= 0


def test_verify_sha256(tmp_path):
  path = tmp_path / "f.bin"
  path.write_bytes(b"recjax")
  good = hashlib.sha256(b"recjax").hexdigest()
  download.verify_sha256(path, good)
  download.verify_sha256(path, good.upper())
  with pytest.raises(download.ChecksumError, match="does not match"):
    download.verify_sha256(path, "0" * 64)
  with pytest.raises(download.ChecksumError, match="no sha256 recorded"):
    download.verify_sha256(path, "")


def test_safe_extract_accepts_a_normal_zip(tmp_path):
  archive = make_zip(tmp_path / "ok.zip", {"ml-100k/": b"", "ml-100k/u.data": b"1\t2\t3\t4\n"})
  out = tmp_path / "out"
  written = download.safe_extract_zip(archive, out)
  assert written == [out / "ml-100k" / "u.data"]
  assert (out / "ml-100k" / "u.data").read_bytes() == b"1\t2\t3\t4\n"


@pytest.mark.parametrize("members,symlinks,problem", [
    ({"../evil.txt": b"x"}, None, "contains '..'"),
    ({"ml-100k/../../evil.txt": b"x"}, None, "contains '..'"),
    ({"/tmp/evil.txt": b"x"}, None, "absolute path"),
    ({"C:/evil.txt": b"x"}, None, "absolute path"),
    ({"ok.txt": b"x"}, {"ml-100k/link": "/etc/passwd"}, "symbolic link"),
])
def test_safe_extract_rejects_malicious_zips(tmp_path, members, symlinks, problem):
  archive = tmp_path / "evil.zip"
  with zipfile.ZipFile(archive, "w") as zf:
    for name, content in members.items():
      # ZipFile.writestr normalises some names; write the raw member name instead.
      info = zipfile.ZipInfo("placeholder")
      info.filename = name
      zf.writestr(info, content)
    for name, target in (symlinks or {}).items():
      info = zipfile.ZipInfo(name)
      info.external_attr = (stat.S_IFLNK | 0o777) << 16
      zf.writestr(info, target)
  out = tmp_path / "out"
  out.mkdir()
  with pytest.raises(download.UnsafeArchiveError, match=problem):
    download.safe_extract_zip(archive, out)
  assert list(out.iterdir()) == []  # nothing was extracted
  assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_rejects_escape_through_existing_symlink(tmp_path):
  outside = tmp_path / "outside"
  outside.mkdir()
  out = tmp_path / "out"
  out.mkdir()
  (out / "ml-100k").symlink_to(outside)
  archive = make_zip(tmp_path / "a.zip", {"ml-100k/u.data": b"x"})
  with pytest.raises(download.UnsafeArchiveError, match="outside the target directory"):
    download.safe_extract_zip(archive, out)
  assert list(outside.iterdir()) == []


def test_bad_archive(tmp_path):
  path = tmp_path / "not.zip"
  path.write_bytes(b"not a zip")
  with pytest.raises(download.DownloadError, match="not a zip archive"):
    download.safe_extract_zip(path, tmp_path / "out")


def fake_ml100k_zip(path: pathlib.Path) -> pathlib.Path:
  """A made-up archive laid out like ml-100k.zip (3 ratings, 2 movies, 2 users)."""
  genres = "|".join(["0"] * 18 + ["1"])
  return make_zip(path, {
      "ml-100k/u.data": b"1\t1\t5\t10\n2\t2\t3\t11\n1\t2\t4\t9\n",
      "ml-100k/u.item": f"1|A (1990)|01-Jan-1990||u|{genres}\n2|B (1991)|01-Jan-1991||u|{genres}\n"
                        .encode("latin-1"),
      "ml-100k/u.user": b"1|20|F|artist|1\n2|30|M|writer|2\n",
  })


def test_download_through_registry_with_file_url(tmp_path):
  (tmp_path / "src").mkdir()
  archive = fake_ml100k_zip(tmp_path / "src" / "ml-100k.zip")
  sha = download.sha256_of(archive)
  root = tmp_path / "data"
  spec = {"name": "ml-100k",
          "download": {"url": archive.as_uri(), "sha256": sha, "size": archive.stat().st_size}}
  data = registry.load_dataset(spec, root)
  assert (data.num_users, data.num_items, data.num_interactions) == (2, 2, 3)
  assert data.item_text["title"].tolist() == ["", "B (1991)", "A (1990)"]
  assert (root / "ml-100k" / "u.data").exists()
  assert sorted(p.name for p in root.iterdir()) == ["ml-100k"]  # the zip was removed

  wrong = tmp_path / "data2"
  with pytest.raises(MissingDataError, match="does not match the recorded") as info:
    registry.load_dataset({**spec, "download": {"url": archive.as_uri(), "sha256": "0" * 64,
                                                "size": None}}, wrong)
  assert "put u.data at" in str(info.value)
  assert not (wrong / "ml-100k").exists() and list(wrong.iterdir()) == []
  with pytest.raises(MissingDataError, match="bytes, expected 1"):
    registry.load_dataset({**spec, "download": {"url": archive.as_uri(), "sha256": sha,
                                                "size": 1}}, wrong)


def test_fetch_archive_unreachable(tmp_path):
  url = f"http://127.0.0.1:{closed_port()}/ml-100k.zip"
  with pytest.raises(download.DownloadError, match=f"could not download {url}"):
    download.fetch_archive({"url": url, "sha256": "0" * 64, "timeout_s": 5}, tmp_path)
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(ValueError, match=r"unknown download key\(s\) \['md5'\]"):
    download.fetch_archive({"url": url, "md5": "x"}, tmp_path)


# ----------------------------------------------------------------------------------------------
# Exact duplicates and the report.


def _shop(tmp_path, text, columns=("user", "item", "rating", "timestamp")):
  (tmp_path / "shop").mkdir(exist_ok=True)
  (tmp_path / "shop" / "events.txt").write_text(text)
  return {"name": "shop", "format": "pairs", "dir": "shop",
          "files": {"interactions": "events.txt"}, "columns": list(columns)}


def test_exact_duplicates_are_dropped_by_default_and_reported(tmp_path):
  spec = _shop(tmp_path, "a x 5 10\na x 4 10\na x 3 20\nb y 1 5\na z 2 10\nb y 1 5\nb x 2 5\n")
  data = registry.load_dataset(spec, tmp_path)
  # (a, x, 10) and (b, y, 5) repeat; the first of each stays. (a, x, 20) is a later, real repeat.
  assert [[data.item_ids[i] for i in s] for s in data.sequences] == [["x", "z", "x"], ["y", "x"]]
  assert data.ratings.tolist() == [5, 2, 3, 1, 2]
  assert data.report == ["dropped 2 exact duplicate interactions (same user, item and timestamp) "
                         "of 7; preprocess.drop_duplicates=False keeps them"]
  kept = registry.load_dataset({**spec, "preprocess": {"drop_duplicates": False}}, tmp_path)
  assert kept.num_interactions == 7 and kept.report == []

  filtered, report = registry.load_dataset_with_report(
      {**spec, "preprocess": {"min_user_interactions": 3}}, tmp_path)
  assert report.interactions_before == 5  # duplicates go first, so they cannot pass a filter
  assert filtered.report[0].startswith("dropped 2 exact duplicate")
  assert filtered.report[1] == ("filter(min_user_interactions=3, min_item_interactions=0, "
                                "k_core=False) dropped 1 of 2 users, 1 of 3 items, 2 of 5 "
                                "interactions in 1 round(s)")
  dropped, n = registry.drop_duplicates(kept)
  assert n == 2 and np.array_equal(dropped.sequences.values, data.sequences.values)


def test_without_timestamps_repeats_are_kept(tmp_path):
  spec = _shop(tmp_path, "a x\na x\nb y\n", columns=("user", "item"))
  data = registry.load_dataset(spec, tmp_path)
  assert data.num_interactions == 3 and data.report == []
