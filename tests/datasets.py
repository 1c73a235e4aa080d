"""Where tests find the real datasets, and what they do when those are absent.

Tests that need real data call `require_data_dir()`. It returns the data root
($RECJAX_DATA_DIR, default ../shared/data relative to the repository root) and skips the test
when the directory is absent, unless RECJAX_REQUIRE_DATA=1, in which case the test fails.
"""
from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def require_data_dir(*subdirs: str) -> pathlib.Path:
  """The real-data root; skips (fails under RECJAX_REQUIRE_DATA=1) if it or a subdir is absent."""
  env = os.environ.get("RECJAX_DATA_DIR")
  root = pathlib.Path(env).expanduser() if env else DEFAULT_DATA_DIR
  if not root.is_absolute():
    root = REPO_ROOT / root
  missing = [str(root / d) for d in ("",) + subdirs if not (root / d).is_dir()]
  if missing:
    reason = (f"real data not found: {', '.join(missing)} (set RECJAX_DATA_DIR to the directory "
              "holding the datasets described in ../shared/data/README.md)")
    if os.environ.get("RECJAX_REQUIRE_DATA") == "1":
      pytest.fail(f"RECJAX_REQUIRE_DATA=1 but {reason}")
    pytest.skip(reason)
  return root
