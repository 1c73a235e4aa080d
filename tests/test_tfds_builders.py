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
from recjax.data import registry
from recjax.text import tfds_builders
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


def test_missing_manual_files_say_where_to_put_them(tmp_path):
  manual = tmp_path / "root"
  (manual / "ml-100k").mkdir(parents=True)
  (manual / "ml-100k" / "u.data").write_text("1\t1\t5\t1\n")
  with pytest.raises(FileNotFoundError, match=r"amazon_office/Office\.inter\.json"):
    _build("recjax_amazon2018", "office", tmp_path / "tfds", manual)
