"""docs/data_formats.md says what the code does: formats, built-in datasets, example errors."""
from __future__ import annotations

import ast
import re

import pytest

from recjax.data import registry
from tests.cli_utils import REPO

DOC = (REPO / "docs" / "data_formats.md").read_text(encoding="utf-8")


def test_every_format_and_builtin_is_documented():
  sections = set(re.findall(r"^### `(\w+)`", DOC, flags=re.MULTILINE))
  assert sections == set(registry.FORMATS)
  table = set(re.findall(r"^\| `([\w-]+)` \| `\w+` \|", DOC, flags=re.MULTILINE))
  assert table == set(registry.BUILTIN_SPECS)


def _error(spec) -> str:
  with pytest.raises(ValueError) as info:
    registry.load_dataset(spec, "/nonexistent")
  return f"ValueError: {info.value}"


def test_example_errors_match_the_code():
  unknown_key = _error({"name": "ml-100k", "min_ratin": 4})
  assert unknown_key in DOC
  documented = re.search(r"^ValueError: unknown dataset 'ml-10k'.*$", DOC, flags=re.MULTILINE)
  formats = re.search(r"\(one of (\[.*?\])\)", documented.group())
  assert ast.literal_eval(formats.group(1)) == sorted(registry.FORMATS)
  actual = _error({"name": "ml-10k"})
  prefix, _, _ = documented.group().partition(", ...]")
  assert actual.startswith(prefix)
  assert actual.endswith(documented.group().partition("]. ")[2])
