"""TFDS builders: built from the real files as manual_dir, read back through Grain.

Skipped unless the `seqio` extra (tensorflow-datasets) is installed.
"""
import grain
import numpy as np
import pytest

tfds = pytest.importorskip(
    "tensorflow_datasets",
    reason="tensorflow_datasets is not installed (pip install -e .[seqio]); TFDS builders untested")

# pylint: disable=g-import-not-at-top,wrong-import-position
from recjax.data import readers, registry
from recjax.text import tfds_builders
from tests import amazon_files
from tests.datasets import require_data_dir

CONFIGS = [  # (builder, config, registry dataset)
    ("recjax_movielens", "100k", "ml-100k"),
    ("recjax_movielens", "1m", "ml-1m"),
    ("recjax_movielens", "1m_pos", "ml-1m-pos"),
    ("recjax_amazon2018", "office", "amazon_office"),
    ("recjax_amazon2018", "scientific", "amazon_scientific"),
    ("recjax_amazon2018", "games6k", "amazon_games6k"),
]


def _build(builder: str, config: str, data_dir, manual_dir) -> None:
  tfds_builders.BUILDERS[builder](config=config, data_dir=str(data_dir)).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))


@pytest.mark.parametrize("builder,config,dataset", CONFIGS, ids=[c[1] for c in CONFIGS])
def test_examples_equal_canonical_data(builder, config, dataset, tmp_path):
  root = require_data_dir(registry.get_spec(dataset)["dir"])
  spec = registry.get_spec(dataset)
  missing = [f for f in spec["files"].values() if not (root / spec["dir"] / f).exists()]
  if missing:
    pytest.skip(f"{root / spec['dir']} lacks {missing}; the builder would download the official "
                "release, which tests do not do")
  _build(builder, config, tmp_path, root)
  source = tfds.data_source(f"{builder}/{config}", data_dir=str(tmp_path))["train"]
  # Threads only contend for the 2 cores of CI: read in the consuming thread.
  examples = list(grain.MapDataset.source(source).to_iter_dataset(
      grain.ReadOptions(num_threads=0)))
  expected = registry.load_dataset({"name": dataset}, root, allow_download=False)

  assert len(examples) == expected.num_users
  first = examples[0]
  assert first["user_id"].decode() == expected.user_ids[0]
  np.testing.assert_array_equal(first["item_ids"], expected.sequences[0])
  np.testing.assert_array_equal(first["item_raw_ids"].astype(str),
                                expected.item_ids[expected.sequences[0]])

  got = tfds_builders.interaction_data(examples, expected.name)
  np.testing.assert_array_equal(got.sequences.offsets, expected.sequences.offsets)
  np.testing.assert_array_equal(got.sequences.values, expected.sequences.values)
  np.testing.assert_array_equal(got.user_ids, expected.user_ids.astype(str))
  np.testing.assert_array_equal(got.item_ids, expected.item_ids.astype(str))
  if expected.timestamps is None:
    assert got.timestamps is None
  else:
    np.testing.assert_array_equal(got.timestamps, expected.timestamps)
  assert sorted(got.item_text) == sorted(expected.item_text)
  for field, column in expected.item_text.items():
    assert got.item_text[field].tolist() == column.tolist(), field
  assert sorted(got.user_features) == sorted(expected.user_features)
  for name, column in expected.user_features.items():
    np.testing.assert_array_equal(got.user_features[name], column, err_msg=name)
  if config in ("100k", "1m"):
    np.testing.assert_array_equal(got.ratings, expected.ratings)


def test_amazon_5core_from_official_files(tmp_path):
  history = amazon_files.write_category(tmp_path / "root" / "amazon2018", "Office_Products")
  _build("recjax_amazon2018", "office_products_5core", tmp_path / "tfds", tmp_path / "root")
  source = tfds.data_source("recjax_amazon2018/office_products_5core",
                            data_dir=str(tmp_path / "tfds"))["train"]
  examples = list(grain.MapDataset.source(source).to_iter_dataset(
      grain.ReadOptions(num_threads=0)))
  assert len(examples) == len(history)
  for ex in examples:
    user = ex["user_id"].decode()
    expected = history[user]
    assert [a.decode() for a in ex["item_raw_ids"]] == [a for a, _, _ in expected]
    assert ex["timestamps"].tolist() == [t for _, t, _ in expected]
    assert ex["ratings"].tolist() == [r for _, _, r in expected]
    assert [r.decode() for r in ex["reviews"]["summary"]] == [
        amazon_files.summary_text(user, a) for a, _, _ in expected]
    assert all(t.decode().startswith("Stapler & Punch") for t in ex["item_text"]["title"])
  # The canonical data rebuilt from the examples equals the reader's.
  got = tfds_builders.interaction_data(examples, "office")
  root = tmp_path / "root" / "amazon2018"
  expected = readers.read_amazon_reviews(root / "Office_Products_5.json.gz",
                                         root / "meta_Office_Products.json.gz")
  np.testing.assert_array_equal(got.sequences.values, expected.sequences.values)
  np.testing.assert_array_equal(got.ratings, expected.ratings)
  assert got.reviews["review"].tolist() == expected.reviews["review"].tolist()
  for field, column in expected.item_text.items():
    assert got.item_text[field].tolist() == column.tolist(), field


def test_amazon_5core_configs_name_official_urls():
  names = {c.name for c in tfds_builders.RecjaxAmazon2018.BUILDER_CONFIGS}
  assert {"office_products_5core", "video_games_5core", "books_5core"} <= names
  files = tfds_builders.amazon2018_files("Video_Games")
  assert files["reviews"] == ("Video_Games_5.json.gz", tfds_builders.AMAZON2018_URL +
                              "/categoryFilesSmall/Video_Games_5.json.gz")
  assert files["meta"][1].endswith("/metaFiles2/meta_Video_Games.json.gz")


def test_missing_manual_files_say_where_to_put_them(tmp_path):
  manual = tmp_path / "root"
  (manual / "ml-100k").mkdir(parents=True)
  (manual / "ml-100k" / "u.data").write_text("1\t1\t5\t1\n")
  with pytest.raises(FileNotFoundError, match=r"amazon_office/Office\.inter\.json"):
    _build("recjax_amazon2018", "office", tmp_path / "tfds", manual)
