"""Downloads the official MovieLens zips, checks their sha256 and extracts them safely.

Only the GroupLens releases are fetched; every other dataset must be put in place by hand
(docs/data_formats.md says where). Extraction refuses any archive member that would land outside
the target directory: absolute paths, `..` components, drive letters and symbolic links.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Mapping

from absl import logging

PathLike = str | os.PathLike

# sha256 and size of the official zips, as recorded by TensorFlow Datasets
# (tensorflow/datasets: tensorflow_datasets/url_checksums/movielens.txt). GroupLens itself publishes
# md5 sums (ml-100k.zip.md5: 0e33842e24a9c977be4e0107933c0723, ml-1m.zip.md5:
# c4d9eecfca2ab87c1945afe126590906).
MOVIELENS_ZIPS: dict[str, dict[str, object]] = {
    "ml-100k": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "sha256": "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        "size": 4924029,
    },
    "ml-1m": {
        "url": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "sha256": "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        "size": 5917549,
    },
}

DOWNLOAD_KEYS = ("url", "sha256", "size", "timeout_s")


class DownloadError(ValueError):
  """A download could not be fetched, verified or safely extracted."""


class ChecksumError(DownloadError):
  """A downloaded file's sha256 differs from the recorded one."""


class UnsafeArchiveError(DownloadError):
  """An archive member would be written outside the extraction directory."""


def sha256_of(path: PathLike) -> str:
  """Hex sha256 of a file."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def verify_sha256(path: PathLike, expected: str) -> None:
  """Raises ChecksumError unless the file's sha256 is `expected`."""
  if not expected:
    raise ChecksumError(f"no sha256 recorded for {path}; refusing to use an unverified download")
  actual = sha256_of(path)
  if actual != expected.lower():
    raise ChecksumError(f"{path}: sha256 {actual} does not match the recorded {expected}; the "
                        "download is corrupt or not the official release")


def _member_problem(info: zipfile.ZipInfo) -> str | None:
  name = info.filename.replace("\\", "/")
  if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
    return "is an absolute path"
  if ".." in name.split("/"):
    return "contains '..'"
  if stat.S_ISLNK(info.external_attr >> 16):
    return "is a symbolic link"
  return None


def safe_extract_zip(archive: PathLike, dest: PathLike) -> list[pathlib.Path]:
  """Extracts a zip into `dest` after checking every member; returns the extracted file paths.

  Raises:
    UnsafeArchiveError: some member is absolute, contains `..`, is a symlink or resolves outside
      `dest`; nothing is extracted then.
    DownloadError: the file is not a zip archive.
  """
  dest = pathlib.Path(dest).resolve()
  try:
    zf = zipfile.ZipFile(archive)
  except zipfile.BadZipFile as e:
    raise DownloadError(f"{archive}: not a zip archive ({e})") from None
  with zf:
    members = zf.infolist()
    for info in members:
      problem = _member_problem(info)
      target = (dest / info.filename.replace("\\", "/")).resolve()
      if problem is None and target != dest and dest not in target.parents:
        problem = "resolves outside the target directory"
      if problem:
        raise UnsafeArchiveError(f"{archive}: member {info.filename!r} {problem}; refusing to "
                                 "extract this archive")
    written = []
    for info in members:
      target = dest / info.filename.replace("\\", "/")
      if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        continue
      target.parent.mkdir(parents=True, exist_ok=True)
      with zf.open(info) as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out)
      written.append(target)
  return written


def download_file(url: str, dest: PathLike, timeout_s: float = 30.0) -> pathlib.Path:
  """Fetches `url` (http, https or file) to `dest` atomically; raises DownloadError on failure."""
  dest = pathlib.Path(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
  try:
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
      shutil.copyfileobj(response, out, 1 << 20)
    os.replace(tmp, dest)
  except (urllib.error.URLError, OSError, ValueError) as e:
    reason = getattr(e, "reason", e)
    raise DownloadError(f"could not download {url}: {reason}") from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return dest


def fetch_archive(source: Mapping[str, object], root: PathLike) -> list[pathlib.Path]:
  """Downloads the zip `source["url"]`, verifies `source["sha256"]` and extracts it into `root`.

  `source` keys: "url", "sha256" (required), "size" (bytes, optional), "timeout_s" (default 30).
  The zip is deleted afterwards; the archive's own top-level folder (e.g. `ml-100k/`) appears
  under `root`.
  """
  unknown = sorted(set(source) - set(DOWNLOAD_KEYS))
  if unknown:
    raise ValueError(f"unknown download key(s) {unknown}; valid keys: {list(DOWNLOAD_KEYS)}")
  url = str(source.get("url") or "")
  sha256 = str(source.get("sha256") or "")
  if not url or not sha256:
    raise DownloadError(f"download spec {dict(source)} needs both 'url' and 'sha256'")
  root = pathlib.Path(root)
  try:
    root.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise DownloadError(f"cannot create {root}: {e}") from None
  # Mode bits too: a read-only data directory stays untouched even for root, who passes access().
  if not os.access(root, os.W_OK) or not root.stat().st_mode & 0o222:
    raise DownloadError(f"{root} is read-only, so {url} cannot be extracted there")
  archive = root / (url.rstrip("/").rsplit("/", 1)[-1] or "download.zip")
  logging.info("Downloading %s to %s", url, archive)
  download_file(url, archive, float(source.get("timeout_s", 30.0)))
  try:
    size = source.get("size")
    if size is not None and archive.stat().st_size != int(size):
      raise ChecksumError(f"{archive}: {archive.stat().st_size} bytes, expected {size}; the "
                          "download is truncated or not the official release")
    verify_sha256(archive, sha256)
    written = safe_extract_zip(archive, root)
  finally:
    archive.unlink(missing_ok=True)
  logging.info("Extracted %d files from %s into %s", len(written), url, root)
  return written
