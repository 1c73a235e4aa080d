"""Small files in the official Amazon Reviews formats (2018 JSON lines, 2014 Python literals).

The content is generated here (no real reviews): every review text and summary names its user
and item, so a test can tell exactly which interaction a rendered text came from.
"""
from __future__ import annotations

import gzip
import json
import pathlib

import numpy as np


def review_text(user: str, asin: str) -> str:
  return f"Review by {user} of {asin}. It works well. Would buy again."


def summary_text(user: str, asin: str) -> str:
  return f"summary {user} {asin}"


def write_category(directory: pathlib.Path, category: str = "Office_Products",
                   num_users: int = 12, num_items: int = 9, per_user: int = 6,
                   seed: int = 0) -> dict[str, list[tuple[str, int, float]]]:
  """Writes `<category>_5.json.gz` and `meta_<category>.json.gz` into `directory`.

  Returns each user's reviews as (asin, unixReviewTime, rating), in chronological order; the
  file lists every user's reviews newest first, so a reader must sort them.
  """
  rng = np.random.default_rng(seed)
  directory.mkdir(parents=True, exist_ok=True)
  asins = [f"B{n:09d}" for n in range(num_items)]
  history: dict[str, list[tuple[str, int, float]]] = {}
  lines = []
  for u in range(num_users):
    user = f"A{u:05d}USER"
    items = rng.choice(asins, size=per_user, replace=False)
    times = 1_300_000_000 + np.sort(rng.choice(10_000, size=per_user, replace=False)) * 86_400
    ratings = rng.integers(1, 6, size=per_user).astype(float)
    history[user] = [(str(a), int(t), float(r)) for a, t, r in zip(items, times, ratings)]
    for asin, t, r in reversed(history[user]):
      lines.append({"overall": r, "verified": True, "reviewTime": "01 1, 2012",
                    "reviewerID": user, "asin": asin, "reviewerName": "someone",
                    "reviewText": review_text(user, asin), "summary": summary_text(user, asin),
                    "unixReviewTime": t})
  with gzip.open(directory / f"{category}_5.json.gz", "wt", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in lines)
  meta = []
  for n, asin in enumerate(asins):
    meta.append({"asin": asin, "title": f"Stapler &amp; Punch model {n}",
                 "brand": f"Brand{n % 3}", "category": [category.replace("_", " "), "Staplers"],
                 "description": [f"A <b>sturdy</b> stapler number {n}.", "Metal."],
                 "price": f"${n + 0.99:.2f}" if n % 2 == 0 else ".a-box-inner{background:#fff}"})
  meta.append({"asin": "B999999999", "title": "An item nobody reviewed"})
  with gzip.open(directory / f"meta_{category}.json.gz", "wt", encoding="utf-8") as f:
    f.writelines(json.dumps(r) + "\n" for r in meta)
  return history
