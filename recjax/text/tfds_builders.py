"""TFDS builders for the recommendation datasets recjax reads, stored as ArrayRecord for Grain.

Needs the `seqio` extra (`pip install -e .[seqio]`, which brings tensorflow-datasets); nothing
else in recjax imports this module. Importing it registers two builders:

  recjax_movielens/100k     MovieLens 100K (official GroupLens zip, or manual_dir/ml-100k/)
  recjax_movielens/1m       MovieLens 1M (official GroupLens zip, or manual_dir/ml-1m/)
  recjax_movielens/1m_pos   MovieLens 1M ratings >= 4, PatchRec sequences (manual_dir only)
  recjax_amazon2018/office      Amazon 2018 Office_Products, LC-Rec JSON (manual_dir only)
  recjax_amazon2018/scientific  Amazon 2018 Industrial_and_Scientific, LC-Rec JSON (manual_dir)
  recjax_amazon2018/games6k     Amazon 2018 Video_Games, RecBole Games-6k files (manual_dir)
  recjax_amazon2018/<category>_5core   an official 5-core category (e.g. office_products_5core,
      video_games_5core; AMAZON2018_CATEGORIES lists all 29): the official review and metadata
      files, from manual_dir/amazon2018/ or downloaded from the McAuley lab's site

Each builder reads its files with `recjax.data.registry.load_dataset` (so TFDS and recjax see
the same canonical `InteractionData`) and writes one split, "train", with one example per user,
in user-row order (example i is row i of the InteractionData):

  user_id        Text: the raw user id
  item_ids       int32 [n]: internal item ids (1..num_items), oldest first
  item_raw_ids   string [n]: the raw item ids of the same items
  timestamps     int64 [n]: Unix seconds (MovieLens 100K/1M, Amazon 5-core)
  ratings        float32 [n]: explicit ratings (MovieLens 100K/1M, Amazon 5-core)
  reviews        {review, summary: string [n]}: each interaction's review (Amazon 5-core)
  item_text      {field: string [n]}: each item's text fields, aligned with item_ids
  user_features  {name: Text or int32}: MovieLens 100K/1M demographics

The dataset is written as ArrayRecord, so Grain reads it by random access without TensorFlow:

  import grain, tensorflow_datasets as tfds
  from recjax.text import tfds_builders
  tfds_builders.RecjaxMovielens(config="100k", data_dir=DIR).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir="../shared/data"))
  users = grain.MapDataset.source(tfds.data_source("recjax_movielens/100k", data_dir=DIR)["train"])

`manual_dir` is a data root laid out as recjax expects (`<manual_dir>/ml-100k/u.data`, ...; see
docs/data_formats.md). When its files are absent, MovieLens 100K/1M download the official
GroupLens zip through the download manager and check the sha256 recorded in
`recjax.data.download.MOVIELENS_ZIPS`. The Amazon 5-core configs read
`<manual_dir>/amazon2018/<Category>_5.json.gz` and `meta_<Category>.json.gz` when present, else
download both from AMAZON2018_URL (the McAuley lab publishes no checksums; TFDS records the
sizes and sha256 of what it fetched). The processed datasets (ml-1m-pos, office, scientific,
games6k) are not published by their authors as downloads and must be put in `manual_dir` by hand.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from recjax.data import download as download_lib
from recjax.data import registry
from recjax.data.canonical import InteractionData, Sequences
from recjax.data.readers import AMAZON_ITEM_FIELDS, TEXT_DTYPE

_MANUAL_INSTRUCTIONS = """\
Set manual_dir to a recjax data root (for example ../shared/data), which holds one folder per
dataset, laid out as recjax.data.registry expects (docs/data_formats.md):
  ml-100k/u.data, u.item, u.user
  ml-1m/ratings.dat, movies.dat, users.dat
  ml-1m-pos/sequences_movieid.txt, id2title.txt (+ ../ml-1m/movies.dat for genres)
  amazon_office/Office.inter.json, Office.item.json
  amazon_scientific/Scientific.inter.json, Scientific.item.json
  amazon_games6k/Games-6k.test.inter, Games-6k.valid.inter, Games-6k.item
  amazon2018/<Category>_5.json.gz, meta_<Category>.json.gz (official Amazon 2018 files)
MovieLens 100K and 1M, and the Amazon 5-core categories, are downloaded from their official
sites when their files are absent.
"""

AMAZON2018_URL = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2"
# The official "5-core" review files of Amazon Reviews 2018 (Ni, Li & McAuley, EMNLP 2019).
AMAZON2018_CATEGORIES = (
    "AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Books",
    "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
    "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Luxury_Beauty", "Magazine_Subscriptions",
    "Movies_and_TV", "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden",
    "Pet_Supplies", "Prime_Pantry", "Software", "Sports_and_Outdoors",
    "Tools_and_Home_Improvement", "Toys_and_Games", "Video_Games")


def amazon2018_files(category: str) -> dict[str, tuple[str, str]]:
  """role -> (file name, official URL) of an Amazon 2018 5-core category."""
  reviews, meta = f"{category}_5.json.gz", f"meta_{category}.json.gz"
  return {"reviews": (reviews, f"{AMAZON2018_URL}/categoryFilesSmall/{reviews}"),
          "meta": (meta, f"{AMAZON2018_URL}/metaFiles2/{meta}")}


@dataclasses.dataclass
class RecjaxConfig(tfds.core.BuilderConfig):
  """One dataset: the registry name it is read with and the features its examples carry."""

  dataset: str = ""  # recjax.data.registry built-in name
  amazon_category: str = ""  # or an official Amazon 2018 5-core category (AMAZON2018_CATEGORIES)
  text_fields: tuple[str, ...] = ()  # InteractionData.item_text fields, in feature order
  review_fields: tuple[str, ...] = ()  # InteractionData.reviews fields
  has_ratings: bool = False
  int_user_features: tuple[str, ...] = ()  # InteractionData.user_features stored as int32
  text_user_features: tuple[str, ...] = ()  # InteractionData.user_features stored as Text
  has_timestamps: bool = False
  downloadable: bool = False  # an official zip in download_lib.MOVIELENS_ZIPS
  homepage: str = ""


class _RecjaxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Per-user chronological sequences of one registry dataset; ArrayRecord by default."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "Ratings and reviews; official Amazon 2018 5-core categories."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_INSTRUCTIONS

  def __init__(self, *, file_format: str | None = None, **kwargs: Any):
    # Grain reads only random-access formats; TFRecord (TFDS's default) is not one.
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    config: RecjaxConfig = self.builder_config
    string_seq = tfds.features.Tensor(shape=(None,), dtype=np.object_)
    features: dict[str, Any] = {
        "user_id": tfds.features.Text(),
        "item_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "item_raw_ids": string_seq,
        "item_text": tfds.features.FeaturesDict({f: string_seq for f in config.text_fields}),
    }
    if config.has_timestamps:
      features["timestamps"] = tfds.features.Tensor(shape=(None,), dtype=np.int64)
    if config.has_ratings:
      features["ratings"] = tfds.features.Tensor(shape=(None,), dtype=np.float32)
    if config.review_fields:
      features["reviews"] = tfds.features.FeaturesDict({f: string_seq
                                                        for f in config.review_fields})
    user_features = {f: np.int32 for f in config.int_user_features}
    user_features.update({f: tfds.features.Text() for f in config.text_user_features})
    if user_features:
      features["user_features"] = tfds.features.FeaturesDict(user_features)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        homepage=config.homepage,
        description=(registry.get_spec(config.dataset).get("description", "") if config.dataset
                     else f"Amazon Reviews 2018, {config.amazon_category} 5-core, with metadata."),
        disable_shuffling=True,  # example i is user row i of the InteractionData
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    if self.builder_config.amazon_category:
      data = registry.load_dataset(self._amazon_spec(dl_manager), allow_download=False)
    else:
      data = registry.load_dataset({"name": self.builder_config.dataset},
                                   self._data_root(dl_manager), allow_download=False)
    return {"train": self._generate_examples(data)}

  def _amazon_spec(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
    """A registry spec for manual_dir/amazon2018/'s files, or for the downloaded ones."""
    category = self.builder_config.amazon_category
    files = amazon2018_files(category)
    try:
      manual = os.path.join(os.fspath(dl_manager.manual_dir), "amazon2018")
    except AssertionError:  # no manual_dir given, or it is empty
      manual = None
    if manual and all(os.path.exists(os.path.join(manual, name)) for name, _ in files.values()):
      paths = {role: os.path.join(manual, name) for role, (name, _) in files.items()}
    else:
      paths = {role: os.fspath(p) for role, p in
               dl_manager.download({role: url for role, (_, url) in files.items()}).items()}
    return {"name": f"amazon2018_{category.lower()}", "format": "amazon_reviews",
            "dir": os.path.dirname(paths["reviews"]),
            "files": {role: os.path.relpath(p, os.path.dirname(paths["reviews"]))
                      for role, p in paths.items()}}

  def _data_root(self, dl_manager: tfds.download.DownloadManager) -> str:
    """manual_dir when it holds this dataset's files, else the extracted official zip."""
    config: RecjaxConfig = self.builder_config
    spec = registry.get_spec(config.dataset)
    try:
      manual = os.fspath(dl_manager.manual_dir)
    except AssertionError:  # no manual_dir given, or it is empty
      manual = None
    if manual and all(os.path.exists(os.path.join(manual, spec["dir"], f))
                      for f in spec["files"].values()):
      return manual
    if not config.downloadable:
      where = manual or "manual_dir"
      missing = ", ".join(os.path.join(where, spec["dir"], f) for f in spec["files"].values())
      raise FileNotFoundError(f"{self.name}/{config.name}: put {missing} in place (this dataset "
                              f"is not downloaded).\n{_MANUAL_INSTRUCTIONS}")
    source = download_lib.MOVIELENS_ZIPS[config.dataset]
    archive = dl_manager.download(source["url"])
    download_lib.verify_sha256(archive, str(source["sha256"]))
    return os.fspath(dl_manager.extract(archive))  # holds the zip's own ml-100k/ (ml-1m/)

  def _generate_examples(self, data: InteractionData) -> Iterator[tuple[int, dict[str, Any]]]:
    config: RecjaxConfig = self.builder_config
    for name in config.text_fields:
      if name not in data.item_text:
        raise ValueError(f"{data.name} has no item text field {name!r}; it has "
                         f"{sorted(data.item_text)}")
    for name in config.review_fields:
      if name not in data.reviews:
        raise ValueError(f"{data.name} has no review field {name!r}; it has {sorted(data.reviews)}")
    reviews = {f: data.reviews[f].astype(object) for f in config.review_fields}
    item_raw_ids = data.item_ids.astype(object)
    item_text = {f: data.item_text[f].astype(object) for f in config.text_fields}
    for user in range(data.num_users):
      items = data.sequences[user]
      example = {
          "user_id": str(data.user_ids[user]),
          "item_ids": items,
          "item_raw_ids": item_raw_ids[items],
          "item_text": {f: column[items] for f, column in item_text.items()},
      }
      start, end = data.sequences.offsets[user], data.sequences.offsets[user + 1]
      if config.has_timestamps:
        example["timestamps"] = data.timestamps[start:end].astype(np.int64)
      if config.has_ratings:
        example["ratings"] = data.ratings[start:end].astype(np.float32)
      if config.review_fields:
        example["reviews"] = {f: reviews[f][start:end] for f in config.review_fields}
      if config.int_user_features or config.text_user_features:
        example["user_features"] = (
            {f: int(data.user_features[f][user]) for f in config.int_user_features}
            | {f: str(data.user_features[f][user]) for f in config.text_user_features})
      yield user, example


_ML_USERS = dict(int_user_features=("age",),
                 text_user_features=("gender", "occupation", "zip_code"))
_ML_HOME = "https://grouplens.org/datasets/movielens/"
_AMAZON_HOME = "https://nijianmo.github.io/amazon/index.html"


class RecjaxMovielens(_RecjaxBuilder):
  """MovieLens as per-user chronological sequences with titles and genres."""

  BUILDER_CONFIGS = [
      RecjaxConfig(name="100k", dataset="ml-100k", has_timestamps=True, has_ratings=True,
                   downloadable=True,
                   text_fields=("title", "genres", "release_date"), homepage=_ML_HOME,
                   **_ML_USERS),
      RecjaxConfig(name="1m", dataset="ml-1m", has_timestamps=True, has_ratings=True,
                   downloadable=True,
                   text_fields=("title", "genres"), homepage=_ML_HOME, **_ML_USERS),
      RecjaxConfig(name="1m_pos", dataset="ml-1m-pos",
                   text_fields=("title", "title_with_year", "genres"), homepage=_ML_HOME),
  ]


class RecjaxAmazon2018(_RecjaxBuilder):
  """Amazon Reviews 2018 categories as per-user chronological sequences with item text."""

  BUILDER_CONFIGS = [
      RecjaxConfig(name="office", dataset="amazon_office", homepage=_AMAZON_HOME,
                   text_fields=("title", "description", "brand", "categories")),
      RecjaxConfig(name="scientific", dataset="amazon_scientific", homepage=_AMAZON_HOME,
                   text_fields=("title", "description", "brand", "categories")),
      RecjaxConfig(name="games6k", dataset="amazon_games6k", homepage=_AMAZON_HOME,
                   text_fields=("title",)),
  ] + [
      RecjaxConfig(name=f"{category.lower()}_5core", amazon_category=category,
                   homepage=_AMAZON_HOME, has_timestamps=True, has_ratings=True,
                   text_fields=AMAZON_ITEM_FIELDS, review_fields=("review", "summary"))
      for category in AMAZON2018_CATEGORIES
  ]


BUILDERS = {"recjax_movielens": RecjaxMovielens, "recjax_amazon2018": RecjaxAmazon2018}


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def interaction_data(examples: Sequence[Mapping[str, Any]], name: str) -> InteractionData:
  """The canonical InteractionData of decoded examples (e.g. a `tfds.data_source` split).

  Examples must be in user-row order, as the builders write them; item text is taken from the
  examples, so an item's text is "" only if it never occurs (which the builders never write).
  """
  rows = [np.asarray(ex["item_ids"], np.int32) for ex in examples]
  sequences = Sequences.from_lists(rows)
  num_items = int(sequences.values.max()) if len(sequences.values) else 0
  item_ids = np.full(num_items + 1, "", object)
  item_ids[0] = "<pad>"
  fields = list(examples[0]["item_text"]) if examples else []
  item_text = {f: np.full(num_items + 1, "", object) for f in fields}
  for ex, items in zip(examples, rows):
    item_ids[items] = [_text(v) for v in ex["item_raw_ids"]]
    for f in fields:
      item_text[f][items] = [_text(v) for v in ex["item_text"][f]]
  timestamps = ratings = None
  if examples and "timestamps" in examples[0]:
    timestamps = np.concatenate([np.asarray(ex["timestamps"], np.int64) for ex in examples])
  if examples and "ratings" in examples[0]:
    ratings = np.concatenate([np.asarray(ex["ratings"], np.float32) for ex in examples])
  reviews = {}
  for f in (examples[0].get("reviews", {}) if examples else {}):
    reviews[f] = np.array([_text(v) for ex in examples for v in ex["reviews"][f]],
                          dtype=TEXT_DTYPE)
  user_features = {}
  if examples and "user_features" in examples[0]:
    for f, value in examples[0]["user_features"].items():
      values = [ex["user_features"][f] for ex in examples]
      user_features[f] = (np.array([_text(v) for v in values]) if isinstance(value, (bytes, str))
                          else np.array(values, np.int32))
  return InteractionData(
      name=name, sequences=sequences,
      user_ids=np.array([_text(ex["user_id"]) for ex in examples]),
      item_ids=item_ids.astype(str), timestamps=timestamps, ratings=ratings, reviews=reviews,
      item_text={f: column.astype(TEXT_DTYPE) for f, column in item_text.items()},
      user_features=user_features)
