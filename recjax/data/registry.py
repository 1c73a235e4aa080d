"""Dataset specs (plain dicts) -> canonical `InteractionData`.

A spec says where the files are and how to read them; it is pure data, so a new dataset in a
supported format needs a config entry and no code:

    load_dataset({"name": "ml-100k"})                                # a built-in
    load_dataset({"name": "ml-100k", "min_rating": 4})               # a built-in, one field changed
    load_dataset({"name": "my-shop", "format": "pairs", "dir": "my_shop",
                  "files": {"interactions": "events.tsv"}, "sep": "\\t",
                  "columns": ["user", "item", "timestamp"],
                  "preprocess": {"min_user_interactions": 5}})

Spec keys: `name`; `format` (a key of FORMATS); `dir` (relative to the data root, or absolute);
`files` ({role: file name relative to `dir`}, roles per format in FORMATS); `item_text` (list
of item-text join specs, see readers.read_item_text); `preprocess` (see `filter_interactions`);
`download` ({"url", "sha256", ...}: fetched when files are absent); `description`; and the
format's own options (FORMATS[format]["options"]). docs/data_formats.md has an example of each.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
from typing import Any, Mapping

from absl import logging
import numpy as np

from recjax.data import download as download_lib
from recjax.data import readers
from recjax.data.canonical import InteractionData, Sequences
from recjax.data.synthetic import make_synthetic

DATA_DIR_ENV = "RECJAX_DATA_DIR"

# Format -> reader, its file roles (True: required when the reader has no alternative) and the
# options it accepts. File roles are the reader's keyword arguments.
FORMATS: dict[str, dict[str, Any]] = {
    "movielens_100k": {
        "reader": readers.read_movielens_100k,
        "files": {"ratings": True, "items": False, "users": False},
        "options": ("min_rating", "order", "encoding"),
    },
    "movielens_1m": {
        "reader": readers.read_movielens_1m,
        "files": {"ratings": True, "movies": False, "users": False},
        "options": ("min_rating", "order", "encoding"),
    },
    "movielens_csv": {
        "reader": readers.read_movielens_csv,
        "files": {"ratings": True, "movies": False, "tags": False},
        "options": ("min_rating", "order", "encoding"),
    },
    "sequence": {
        "reader": readers.read_sequences,
        "files": {"sequences": True},
        "options": ("sep", "numeric_ids", "encoding"),
    },
    "pairs": {
        "reader": readers.read_pairs,
        "files": {"interactions": True},
        "options": ("sep", "columns", "header", "numeric_ids", "min_rating", "encoding"),
    },
    "lcrec_json": {
        "reader": readers.read_lcrec_json,
        "files": {"inter": True, "item": False},
        "options": (),
    },
    "amazon_reviews": {
        "reader": readers.read_amazon_reviews,
        "files": {"reviews": True, "meta": False},
        "options": ("min_rating", "encoding"),
    },
    "atomic": {
        "reader": readers.read_atomic,
        # One of "inter" or "test_inter" (read_atomic checks which).
        "files": {"inter": False, "test_inter": False, "valid_inter": False, "item": False},
        "options": ("sep", "min_rating", "ignore_columns", "encoding"),
    },
    "synthetic": {
        "reader": make_synthetic,
        "files": {},
        "options": ("num_users", "num_items", "num_clusters", "seed", "min_length", "max_length",
                    "transition_peak", "zipf_exponent"),
    },
}
COMMON_KEYS = ("name", "format", "description", "preprocess")
FILE_KEYS = ("dir", "files", "item_text", "download")
PREPROCESS_KEYS = ("drop_duplicates", "min_user_interactions", "min_item_interactions", "k_core")

_ML1M_MOVIES = {"file": "../ml-1m/movies.dat", "sep": "::", "encoding": "latin-1",
                "columns": ["item_id", "title_with_year", "genres"],
                "list_fields": {"genres": "|"}, "optional": True}

BUILTIN_SPECS: dict[str, dict[str, Any]] = {
    "ml-100k": {
        "description": "MovieLens 100K raw release; all ratings, ordered by timestamp.",
        "format": "movielens_100k",
        "dir": "ml-100k",
        "files": {"ratings": "u.data", "items": "u.item", "users": "u.user"},
        "download": dict(download_lib.MOVIELENS_ZIPS["ml-100k"]),
    },
    "ml-1m": {
        "description": ("MovieLens 1M raw release; needs ratings.dat from ml-1m.zip (the shared "
                        "data directory has only movies.dat and users.dat, so use 'ml-1m-pos' "
                        "there)."),
        "format": "movielens_1m",
        "dir": "ml-1m",
        "files": {"ratings": "ratings.dat", "movies": "movies.dat", "users": "users.dat"},
        "download": dict(download_lib.MOVIELENS_ZIPS["ml-1m"]),
    },
    "ml-1m-pos": {
        "description": ("MovieLens 1M ratings >= 4 as chronological MovieID sequences (PatchRec); "
                        "titles from id2title.txt, genres from ../ml-1m/movies.dat if present."),
        "format": "sequence",
        "dir": "ml-1m-pos",
        "files": {"sequences": "sequences_movieid.txt"},
        "numeric_ids": True,
        "item_text": [
            {"file": "id2title.txt", "sep": "||", "columns": ["item_id", "title"],
             "id_offset": 1},
            _ML1M_MOVIES,
        ],
    },
    "ml-latest-small": {
        "description": ("MovieLens latest-small (GroupLens development set, 2018 snapshot): "
                        "0.5-5 star ratings ordered by timestamp, titles, genres, and the user's "
                        "tags of each rated movie as per-interaction text."),
        "format": "movielens_csv",
        "dir": "ml-latest-small",
        "files": {"ratings": "ratings.csv", "movies": "movies.csv", "tags": "tags.csv"},
    },
    "amazon2018_gift_cards": {
        "description": ("Amazon Reviews 2018 Gift_Cards 5-core, official release: review text, "
                        "summary and 1-5 rating per interaction; item title, brand, "
                        "description, categories and price from the metadata file."),
        "format": "amazon_reviews",
        "dir": "amazon2018_gift_cards",
        "files": {"reviews": "Gift_Cards_5.json.gz", "meta": "meta_Gift_Cards.json.gz"},
    },
    "amazon2018_all_beauty": {
        "description": ("Amazon Reviews 2018 All_Beauty 5-core, official release (reviews only, "
                        "no metadata): the file repeats rows, 5,269 rows of which 4,161 are "
                        "distinct (user, item, time); exact duplicates are dropped by default."),
        "format": "amazon_reviews",
        "dir": "amazon2018_all_beauty",
        "files": {"reviews": "All_Beauty_5.json.gz"},
    },
    "amazon_beauty": {
        "description": "Amazon 2014 Beauty 5-core as used by S3Rec/ICLRec/DuoRec (no text).",
        "format": "sequence",
        "dir": "amazon_beauty",
        "files": {"sequences": "Beauty.txt"},
        "numeric_ids": True,
    },
    "amazon_video": {
        "description": "Amazon 2014 Video Games, the SASRec paper's 'Video' (no text).",
        "format": "pairs",
        "dir": "amazon_video",
        "files": {"interactions": "Video.txt"},
        "numeric_ids": True,
    },
    "amazon_office": {
        "description": "Amazon 2018 Office_Products, LC-Rec JSON.",
        "format": "lcrec_json",
        "dir": "amazon_office",
        "files": {"inter": "Office.inter.json", "item": "Office.item.json"},
    },
    "amazon_scientific": {
        "description": "Amazon 2018 Industrial_and_Scientific, LC-Rec JSON.",
        "format": "lcrec_json",
        "dir": "amazon_scientific",
        "files": {"inter": "Scientific.inter.json", "item": "Scientific.item.json"},
    },
    "amazon_games6k": {
        "description": "Amazon 2018 Video_Games 5-core, RecBole sequential atomic files (LLMRank).",
        "format": "atomic",
        "dir": "amazon_games6k",
        "files": {"test_inter": "Games-6k.test.inter", "valid_inter": "Games-6k.valid.inter",
                  "item": "Games-6k.item"},
    },
    "synthetic": {
        "description": "Synthetic Markov-cluster sequences (recjax.data.synthetic).",
        "format": "synthetic",
        "num_users": 2000,
        "num_items": 1000,
        "num_clusters": 20,
        "seed": 0,
    },
}


def list_datasets() -> list[str]:
  """Names of the built-in datasets."""
  return sorted(BUILTIN_SPECS)


def _as_dict(spec: Any) -> dict[str, Any]:
  if hasattr(spec, "to_dict"):  # ml_collections.ConfigDict
    spec = spec.to_dict()
  if not isinstance(spec, Mapping):
    raise ValueError(f"a dataset spec must be a mapping such as {{'name': 'ml-100k'}}, got "
                     f"{type(spec).__name__}")
  return copy.deepcopy(dict(spec))


def resolve_spec(spec: Mapping[str, Any] | str) -> dict[str, Any]:
  """The full, validated spec: a built-in merged with `spec`'s fields, or `spec` itself.

  Nested dicts (`files`, `preprocess`, `download`) are merged key by key; a None value in `files`
  drops that file.
  """
  spec = {"name": spec} if isinstance(spec, str) else _as_dict(spec)
  name = spec.get("name")
  if not name:
    raise ValueError(f"dataset spec {spec} has no 'name'")
  if name in BUILTIN_SPECS:
    merged = copy.deepcopy(BUILTIN_SPECS[name])
    for key, value in spec.items():
      if key in ("files", "preprocess", "download") and isinstance(value, Mapping) and isinstance(
          merged.get(key), Mapping):
        merged[key] = {**merged[key], **value}
      else:
        merged[key] = value
    spec = merged
  elif "format" not in spec:
    raise ValueError(f"unknown dataset {name!r}; built-in datasets: {list_datasets()}. For a new "
                     f"dataset give a full spec with 'format' (one of {sorted(FORMATS)}), 'dir' "
                     "and 'files'")
  fmt = spec.get("format")
  if fmt not in FORMATS:
    raise ValueError(f"dataset {name!r}: unknown format {fmt!r}; valid formats: "
                     f"{sorted(FORMATS)}")
  fmt_info = FORMATS[fmt]
  valid = list(COMMON_KEYS) + (list(FILE_KEYS) if fmt != "synthetic" else []) + list(
      fmt_info["options"])
  unknown = sorted(set(spec) - set(valid))
  if unknown:
    raise ValueError(f"dataset {name!r}: unknown spec key(s) {unknown} for format {fmt!r}; valid "
                     f"keys: {valid}")
  if fmt != "synthetic":
    files = spec.get("files") or {}
    if not isinstance(files, Mapping):
      raise ValueError(f"dataset {name!r}: 'files' must map roles to file names, got {files!r}")
    bad = sorted(set(files) - set(fmt_info["files"]))
    if bad:
      raise ValueError(f"dataset {name!r}: unknown file role(s) {bad} for format {fmt!r}; valid "
                       f"roles: {list(fmt_info['files'])}")
    spec["files"] = {role: f for role, f in files.items() if f is not None}
    missing = [r for r, required in fmt_info["files"].items() if required and r not in
               spec["files"]]
    if missing:
      raise ValueError(f"dataset {name!r}: format {fmt!r} needs file role(s) {missing} in "
                       "'files'")
    if "dir" not in spec:
      raise ValueError(f"dataset {name!r}: spec has no 'dir' (the folder under the data root "
                       "that holds its files)")
  preprocess = spec.get("preprocess") or {}
  unknown = sorted(set(preprocess) - set(PREPROCESS_KEYS))
  if unknown:
    raise ValueError(f"dataset {name!r}: unknown preprocess key(s) {unknown}; valid keys: "
                     f"{list(PREPROCESS_KEYS)}")
  return spec


def get_spec(name: str) -> dict[str, Any]:
  """A copy of a built-in spec, with its name."""
  return resolve_spec({"name": name})


def data_root(root: str | os.PathLike | None = None, spec: Mapping[str, Any] | None = None
              ) -> pathlib.Path:
  """The data root: `root`, else $RECJAX_DATA_DIR; raises MissingDataError if neither is set.

  An empty `root` counts as unset. A spec whose `dir` is absolute needs no root: its files and
  downloads go to that directory and its parent.
  """
  if spec is not None and os.path.isabs(os.path.expanduser(spec["dir"])):
    return pathlib.Path(spec["dir"]).expanduser().parent
  root = root or os.environ.get(DATA_DIR_ENV) or None
  if root is None:
    where = ""
    if spec is not None:
      expected = ", ".join(f"<root>/{spec['dir']}/{f}" for f in spec["files"].values())
      where = f" Dataset {spec['name']!r} expects {expected}."
    raise readers.MissingDataError(
        f"${DATA_DIR_ENV}", f"no data directory: pass root=... or set {DATA_DIR_ENV} to the "
        f"directory that holds one folder per dataset (e.g. <root>/ml-100k/u.data).{where}")
  return pathlib.Path(root).expanduser()


def _dataset_dir(spec: Mapping[str, Any], root: pathlib.Path) -> pathlib.Path:
  return root / pathlib.Path(spec["dir"]).expanduser()


def _file_paths(spec: Mapping[str, Any], root: pathlib.Path) -> dict[str, pathlib.Path]:
  directory = _dataset_dir(spec, root)
  return {role: directory / f for role, f in spec["files"].items()}


def _missing_message(spec, root, missing, reason) -> str:
  lines = [f"dataset {spec['name']!r} is missing {len(missing)} file(s) under data root {root}:"]
  lines += [f"  put {p.name} at {p}" for p in missing]
  if reason:
    lines.append(f"Automatic download failed: {reason}")
  elif spec.get("download"):
    lines.append("Automatic download is off for this call.")
  if spec.get("download"):
    lines.append(f"By hand: download {spec['download']['url']} and unzip it in {root}.")
  if spec.get("description"):
    lines.append(f"({spec['description']})")
  return "\n".join(lines)


def _ensure_files(spec: Mapping[str, Any], root: pathlib.Path, allow_download: bool
                  ) -> dict[str, pathlib.Path]:
  paths = _file_paths(spec, root)
  missing = [p for p in paths.values() if not p.exists()]
  if not missing:
    return paths
  reason = None
  if spec.get("download") and allow_download:
    try:
      download_lib.fetch_archive(spec["download"], root)
    except download_lib.DownloadError as e:
      reason = str(e)
    missing = [p for p in paths.values() if not p.exists()]
    if not missing:
      return paths
    reason = reason or "the archive did not contain the missing files"
  raise readers.MissingDataError(_dataset_dir(spec, root), _missing_message(spec, root, missing,
                                                                      reason))


def _item_text_joins(spec: Mapping[str, Any], root: pathlib.Path
                     ) -> tuple[list[dict[str, Any]], list[str]]:
  """The item-text joins with their files present, and report lines for optional ones absent."""
  joins, skipped = [], []
  for join in spec.get("item_text") or []:
    join = dict(join)
    if "file" not in join:
      raise ValueError(f"dataset {spec['name']!r}: item_text entry {join} has no 'file'")
    join["file"] = _dataset_dir(spec, root) / join["file"]
    if join.pop("optional", False) and not join["file"].exists():
      skipped.append(f"optional item-text file {join['file']} is absent; skipped")
      logging.warning("%s: %s", spec["name"], skipped[-1])
      continue
    joins.append(join)
  return joins, skipped


def load_dataset(spec: Mapping[str, Any] | str, root: str | os.PathLike | None = None, *,
                 allow_download: bool = True) -> InteractionData:
  """Reads the dataset `spec` describes and applies its `preprocess` filters.

  Args:
    spec: {"name": built-in name, ...overrides} or a full spec (see module docstring), or just a
      built-in name.
    root: data root holding one folder per dataset; defaults to $RECJAX_DATA_DIR.
    allow_download: fetch the spec's `download` archive when its files are absent.

  Raises:
    ValueError: unknown dataset, format, spec key, file role or option.
    readers.MissingDataError: files absent (the message says which files to put where).
    readers.DataFormatError: malformed files (the message names file, line and problem).
  """
  data, _ = load_dataset_with_report(spec, root, allow_download=allow_download)
  return data


def load_dataset_with_report(spec: Mapping[str, Any] | str,
                             root: str | os.PathLike | None = None, *,
                             allow_download: bool = True
                             ) -> tuple[InteractionData, FilterReport | None]:
  """Like `load_dataset`, also returning the preprocess filter report (None without filters).

  Every change to the data (duplicates dropped, filter removals, items without text) is also a
  line of the returned data's `report`.
  """
  spec = resolve_spec(spec)
  fmt = FORMATS[spec["format"]]
  options = {k: spec[k] for k in fmt["options"] if k in spec}
  if spec["format"] == "synthetic":
    data = fmt["reader"](name=spec["name"], **options)
  else:
    root_path = data_root(root, spec)
    paths = _ensure_files(spec, root_path, allow_download)
    joins, skipped = _item_text_joins(spec, root_path)
    data = fmt["reader"](**paths, name=spec["name"], item_text=joins, **options)
    if skipped:
      data = dataclasses.replace(data, report=[*skipped, *data.report])
  preprocess = dict(spec.get("preprocess") or {})
  if preprocess.pop("drop_duplicates", True):
    data, _ = drop_duplicates(data)
  report = None
  if preprocess:
    data, report = filter_interactions(data, **preprocess)
    if data.num_interactions == 0:
      raise ValueError(f"dataset {spec['name']!r}: preprocess {dict(spec['preprocess'])} removed "
                       f"all {report.interactions_before:,} interactions; lower the thresholds")
  logging.info("Loaded %s", data.summary())
  for line in data.report:
    logging.info("%s: %s", data.name, line)
  return data, report


# ----------------------------------------------------------------------------------------------
# Preprocessing filters.


@dataclasses.dataclass(frozen=True)
class FilterReport:
  """What `filter_interactions` removed."""

  users_before: int
  users_after: int
  items_before: int
  items_after: int
  interactions_before: int
  interactions_after: int
  rounds: int

  @property
  def users_dropped(self) -> int:
    return self.users_before - self.users_after

  @property
  def items_dropped(self) -> int:
    return self.items_before - self.items_after

  @property
  def interactions_dropped(self) -> int:
    return self.interactions_before - self.interactions_after


def drop_duplicates(data: InteractionData) -> tuple[InteractionData, int]:
  """Drops exact duplicate interactions (same user, item and timestamp), keeping the first.

  Data without timestamps is returned unchanged: a repeated item there may be a real repeat.
  Returns the data (with a `report` line when something was dropped) and the number dropped.
  """
  if data.timestamps is None or data.num_interactions == 0:
    return data, 0
  seq = data.sequences
  user_of = np.repeat(np.arange(len(seq), dtype=np.int64), seq.lengths)
  order = np.lexsort((data.timestamps, seq.values, user_of))
  key = (user_of[order], seq.values[order], data.timestamps[order])
  repeat = np.zeros(len(order), bool)
  repeat[1:] = np.logical_and.reduce([k[1:] == k[:-1] for k in key])
  dropped = int(repeat.sum())
  if not dropped:
    return data, 0
  keep = np.ones(len(order), bool)
  keep[order[repeat]] = False  # lexsort is stable: the first of equal rows in file order stays
  line = (f"dropped {dropped:,} exact duplicate interactions (same user, item and timestamp) of "
          f"{data.num_interactions:,}; preprocess.drop_duplicates=False keeps them")
  logging.info("%s: %s", data.name, line)
  return _subset(data, keep, user_of, line), dropped


def filter_interactions(data: InteractionData, min_user_interactions: int = 0,
                        min_item_interactions: int = 0, k_core: bool = False
                        ) -> tuple[InteractionData, FilterReport]:
  """Drops rare items, then users with too few interactions; logs and returns what it dropped.

  One pass removes interactions with items seen fewer than `min_item_interactions` times, then
  users left with fewer than `min_user_interactions` interactions. Removing users can push items
  back under their threshold; `k_core=True` repeats both steps until nothing changes, so every
  remaining user and item meets its threshold. Items keep their relative order and are renumbered
  1..N; users keep their order.
  """
  if min_user_interactions < 0 or min_item_interactions < 0:
    raise ValueError("min_user_interactions and min_item_interactions must be >= 0, got "
                     f"{min_user_interactions}, {min_item_interactions}")
  seq = data.sequences
  user_of = np.repeat(np.arange(len(seq), dtype=np.int64), seq.lengths)
  keep = np.ones(len(seq.values), bool)
  rounds = 0
  while True:
    rounds += 1
    before = keep.sum()
    if min_item_interactions > 0:
      item_counts = np.bincount(seq.values[keep], minlength=data.num_items + 1)
      keep &= item_counts[seq.values] >= min_item_interactions
    if min_user_interactions > 0:
      user_counts = np.bincount(user_of[keep], minlength=len(seq))
      keep &= user_counts[user_of] >= min_user_interactions
    if not k_core or keep.sum() == before:
      break
  report = FilterReport(
      users_before=data.num_users,
      users_after=int(np.count_nonzero(np.bincount(user_of[keep], minlength=len(seq)))),
      items_before=data.num_items,
      items_after=int(np.count_nonzero(np.bincount(seq.values[keep])[1:])),
      interactions_before=data.num_interactions, interactions_after=int(keep.sum()),
      rounds=rounds)
  line = (f"filter(min_user_interactions={min_user_interactions}, "
          f"min_item_interactions={min_item_interactions}, k_core={k_core}) dropped "
          f"{report.users_dropped:,} of {report.users_before:,} users, "
          f"{report.items_dropped:,} of {report.items_before:,} items, "
          f"{report.interactions_dropped:,} of {report.interactions_before:,} interactions in "
          f"{rounds} round(s)")
  logging.info("%s: %s", data.name, line)
  return _subset(data, keep, user_of, line), report


def _subset(data: InteractionData, keep: np.ndarray, user_of: np.ndarray, line: str
            ) -> InteractionData:
  """The interactions where `keep` holds, with users and items renumbered densely; `line` is
  added to the report."""
  values = data.sequences.values[keep]
  counts = np.bincount(user_of[keep], minlength=data.num_users)
  users = np.flatnonzero(counts > 0)
  items_kept = np.flatnonzero(np.bincount(values, minlength=data.num_items + 1) > 0)
  items_kept = items_kept[items_kept > 0]
  new_id = np.zeros(data.num_items + 1, np.int32)
  new_id[items_kept] = np.arange(1, len(items_kept) + 1, dtype=np.int32)
  item_rows = np.concatenate([[0], items_kept])
  offsets = np.concatenate([[0], np.cumsum(counts[users])]).astype(np.int64)
  return InteractionData(
      name=data.name,
      sequences=Sequences(values=new_id[values], offsets=offsets),
      user_ids=data.user_ids[users],
      item_ids=data.item_ids[item_rows],
      timestamps=None if data.timestamps is None else data.timestamps[keep],
      ratings=None if data.ratings is None else data.ratings[keep],
      reviews={k: v[keep] for k, v in data.reviews.items()},
      item_text={k: v[item_rows] for k, v in data.item_text.items()},
      user_features={k: v[users] for k, v in data.user_features.items()},
      report=[*data.report, line],
  )

