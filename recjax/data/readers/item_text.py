"""Item-text join files (delimited or JSON) that add text fields to any format."""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from recjax.data.readers.common import (DataFormatError, PathLike, check_file, clean_text,
                                        read_lines, split_fields, to_int)

TEXT_JOIN_KEYS = ("file", "format", "sep", "columns", "encoding", "id_offset", "header",
                  "list_fields", "field", "optional")


def read_item_text(join: Mapping[str, Any]) -> dict[str, dict[str, str]]:
  """Reads one item-text join file into field -> {raw item id: cleaned text}.

  `join` keys: `file` (path); `format`: "delimited" (default) or "json"; for delimited files
  `sep` (default tab), `columns` (names, one of them "item_id"; "-" skips a column), `header`
  (skip the first line), `encoding` (default utf-8), `list_fields` ({column: separator}: split
  the column on the separator and rejoin with ", "); for JSON files `field` names the text field
  when values are strings or lists rather than objects; `id_offset` (int added to numeric item
  ids so they match the interaction file's ids); `optional` (read by the registry: skip the join
  when the file is absent).
  """
  unknown = sorted(set(join) - set(TEXT_JOIN_KEYS))
  if unknown:
    raise ValueError(f"unknown item_text key(s) {unknown}; valid keys: {list(TEXT_JOIN_KEYS)}")
  if "file" not in join:
    raise ValueError(f"item_text entry {dict(join)} has no 'file'")
  path = join["file"]
  fmt = join.get("format", "delimited")
  offset = int(join.get("id_offset", 0))
  list_fields = dict(join.get("list_fields") or {})

  def item_key(token, lineno):
    token = str(token).strip()
    if offset:
      return str(to_int(token, path, lineno, "item id") + offset)
    return token

  def text(field, value):
    if isinstance(value, (list, tuple)):
      return clean_text(", ".join(str(v) for v in value))
    value = "" if value is None else str(value)
    if field in list_fields:
      value = ", ".join(p for p in value.split(list_fields[field]) if p)
    return clean_text(value)

  tables: dict[str, dict[str, str]] = {}
  if fmt == "json":
    data = load_json(path, join.get("encoding", "utf-8"))
    if not isinstance(data, dict):
      raise DataFormatError(path, f"expected a JSON object {{item: {{field: text}}}}, got "
                            f"{type(data).__name__}")
    field_name = join.get("field", "text")
    for raw, value in data.items():
      key = item_key(raw, None)
      fields = value if isinstance(value, dict) else {field_name: value}
      for field, v in fields.items():
        tables.setdefault(field, {})[key] = text(field, v)
    return tables
  if fmt != "delimited":
    raise ValueError(f"unknown item_text format {fmt!r} for {path}; choose 'delimited' or 'json'")
  columns = list(join.get("columns") or ["item_id", "title"])
  if "item_id" not in columns:
    raise ValueError(f"item_text columns {columns} for {path} must include 'item_id'")
  sep = join.get("sep", "\t")
  lines = read_lines(path, join.get("encoding", "utf-8"))
  if join.get("header", False):
    next(lines, None)
  id_col = columns.index("item_id")
  for lineno, line in lines:
    parts = split_fields(line, sep)
    if len(parts) != len(columns):
      raise DataFormatError(path, f"expected {len(columns)} fields {columns} separated by "
                            f"{sep!r}, got {len(parts)}", lineno)
    key = item_key(parts[id_col], lineno)
    for col, value in zip(columns, parts):
      if col not in ("item_id", "-"):
        tables.setdefault(col, {})[key] = text(col, value)
  return tables


def merge_text(*tables: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
  """Merges text tables; a later non-empty value replaces an earlier one."""
  merged: dict[str, dict[str, str]] = {}
  for table in tables:
    for field, values in table.items():
      target = merged.setdefault(field, {})
      for key, value in values.items():
        if value or key not in target:
          target[key] = value
  return merged


def joined_text(item_text: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
  return merge_text(*(read_item_text(j) for j in item_text))


def load_json(path: PathLike, encoding: str = "utf-8") -> Any:
  check_file(path)
  try:
    # utf-8-sig reads files with and without a byte-order mark alike.
    sig = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    with open(path, encoding=sig) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise DataFormatError(path, f"invalid JSON: {e.msg} (column {e.colno})", e.lineno) from None
  except UnicodeDecodeError as e:
    raise DataFormatError(path, f"cannot decode as {encoding} ({e.reason})") from None
