"""What every reader shares: errors, text cleaning, line reading, id numbering."""
from __future__ import annotations

import gzip
import html
import os
import re
import zlib
from typing import Iterator, Sequence

import numpy as np

PathLike = str | os.PathLike

# Variable-width numpy strings: item descriptions reach 40k characters, and a fixed-width '<U'
# array would pad every item to that.
TEXT_DTYPE = np.dtypes.StringDType()


class DataFormatError(ValueError):
  """A data file is malformed or missing; the message names the file, the line and the problem."""

  def __init__(self, path: PathLike, problem: str, line: int | None = None):
    self.path = str(path)
    self.line = line
    self.problem = problem
    where = self.path if line is None else f"{self.path}:{line}"
    super().__init__(f"{where}: {problem}")


class MissingDataError(DataFormatError):
  """A file or directory that a dataset needs does not exist."""


# ----------------------------------------------------------------------------------------------
# Text cleaning: the one place; recjax.text imports it.

# A UTF-8 continuation byte (0x80-0xbf) as it reads once decoded as cp1252 (or as latin-1, for
# the five bytes cp1252 leaves undefined).
_CONT = ("[\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
         "\u2013\u2014\u2018-\u201a\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]")
# A whole mis-decoded UTF-8 character: a lead byte followed by exactly as many continuation
# bytes as the lead announces (C2-DF: 1, E0-EF: 2, F0-F4: 3). Exact counts keep a real "é"
# followed by a real "–" ("Café–Bar") as it is.
_MOJIBAKE = re.compile(f"[\u00c2-\u00df]{_CONT}|[\u00e0-\u00ef]{_CONT}{{2}}|"
                       f"[\u00f0-\u00f4]{_CONT}{{3}}")
# A UTF-8 no-break space whose second byte was lost upstream leaves a lone "Â" before a space.
_LONE_A_CIRC = re.compile("\u00c2(?=\\s)")
_BLOCK_TAG = re.compile(r"<\s*/?\s*(br|p|li|div|tr|td|h[1-6])\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<\s*/?\s*[A-Za-z][^<>]*>")
# Control characters other than whitespace (NUL, C0, DEL, C1), bidi embeddings, overrides,
# isolates and marks, and stray byte-order marks: invisible, and able to reorder what is shown.
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                        "\u2066-\u2069\ufeff]")


def _cp1252_byte(char: str) -> int:
  try:
    return char.encode("cp1252")[0]
  except UnicodeEncodeError:
    return ord(char)  # 0x81, 0x8d, 0x8f, 0x90, 0x9d: undefined in cp1252, kept by latin-1


def _unmangle(match: re.Match) -> str:
  run = match.group()
  try:
    return bytes(_cp1252_byte(c) for c in run).decode("utf-8")
  except (UnicodeDecodeError, ValueError):
    return run


def clean_text(text: str) -> str:
  """Text as a person should see it: entities decoded, mojibake repaired, no markup.

  In order: HTML entities are decoded (up to 3 times: scraped catalogues double-escape,
  "&amp;amp;"); UTF-8 read as cp1252 or latin-1 is repaired ("cafÃ©" -> "café", "â€™" -> "’");
  HTML tags are removed (block tags such as <br> become a space; "5 < 6" is not a tag);
  control characters (NUL, C0 other than whitespace, DEL, C1), bidi embeddings, overrides,
  isolates and marks (U+202A-202E, U+2066-2069, U+200E/F, U+061C) and byte-order marks are
  removed; whitespace runs become one space and the ends are stripped.
  """
  if not text:
    return ""
  text = str(text)
  for _ in range(3):
    if "&" not in text:
      break
    unescaped = html.unescape(text)
    if unescaped == text:
      break
    text = unescaped
  text = _MOJIBAKE.sub(_unmangle, text)
  text = _LONE_A_CIRC.sub("", text)
  if "<" in text:
    text = _TAG.sub("", _BLOCK_TAG.sub(" ", text))
  text = _INVISIBLE.sub("", text)
  return " ".join(text.split())

# ----------------------------------------------------------------------------------------------
# Files, lines and fields.


def check_file(path: PathLike) -> None:
  if not os.path.exists(path):
    raise MissingDataError(path, "file not found")
  if os.path.isdir(path):
    raise DataFormatError(path, "expected a file, found a directory")


def open_text(path: PathLike, encoding: str):
  """A text file, decompressed on the fly when its name ends in .gz."""
  if os.fspath(path).endswith(".gz"):
    return gzip.open(path, "rt", encoding=encoding, newline=None)
  return open(path, encoding=encoding, newline=None)


def read_lines(path: PathLike, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, line without its newline), skipping blank lines.

  A byte-order mark at the start of the file is dropped (else it would stay glued to the first
  id).
  """
  check_file(path)
  lineno = 0
  try:
    with open_text(path, encoding) as f:
      for lineno, line in enumerate(f, start=1):
        line = line.rstrip("\r\n")
        if lineno == 1:
          line = strip_bom(line)
        if line.strip():
          yield lineno, line
  except UnicodeDecodeError as e:
    raise DataFormatError(path, f"cannot decode as {encoding} ({e.reason}); set the 'encoding' "
                          "option (MovieLens files are latin-1)", lineno + 1) from None
  except (OSError, EOFError, zlib.error) as e:  # a truncated or corrupt .gz
    raise DataFormatError(path, f"cannot read the file ({type(e).__name__}: {e})",
                          lineno + 1) from None


def split_fields(line: str, sep: str | None) -> list[str]:
  return line.split() if sep is None else line.split(sep)


def to_int(token: str, path: PathLike, lineno: int | None, what: str) -> int:
  try:
    return int(token)
  except ValueError:
    raise DataFormatError(path, f"{what} must be an integer, got {token!r}", lineno) from None


def to_float(token: str, path: PathLike, lineno: int | None, what: str) -> float:
  try:
    return float(token)
  except ValueError:
    raise DataFormatError(path, f"{what} must be a number, got {token!r}", lineno) from None


def strip_bom(text: str) -> str:
  """`text` without a leading UTF-8 byte-order mark (U+FEFF)."""
  return text[1:] if text.startswith("\ufeff") else text


def _id_number(token: str, path: PathLike, lineno: int | None, what: str) -> int:
  value = to_int(token, path, lineno, what)
  if value < 0:
    raise DataFormatError(path, f"{what} must be a non-negative integer, got {token.strip()!r}",
                          lineno)
  return value


def numeric_tokens(tokens: list[str], path: PathLike, lineno: int) -> list[str]:
  """Integer item ids, normalised ("007" -> "7"); an error names the first bad token."""
  try:
    values = [int(t) for t in tokens]
  except ValueError:
    bad = next(t for t in tokens if not t.strip().lstrip("+-").isdigit())
    raise DataFormatError(path, f"item id must be an integer, got {bad!r}", lineno) from None
  if min(values, default=0) < 0:
    bad = tokens[values.index(min(values))]
    raise DataFormatError(path, f"item id must be a non-negative integer, got {bad.strip()!r}",
                          lineno)
  return [str(v) for v in values]


def raw_id(token: str, numeric: bool, path: PathLike, lineno: int | None, what: str) -> str:
  """`token` as a raw id; with `numeric`, a non-negative integer normalised ("007" -> "7") so
  that files written differently still join."""
  return str(_id_number(token, path, lineno, what)) if numeric else token


class Ids:
  """Raw id -> code, codes given in order of first appearance."""

  def __init__(self):
    self.codes: dict[str, int] = {}

  def __call__(self, raw: str) -> int:
    codes = self.codes
    return codes.setdefault(raw, len(codes))

  def many(self, raws: Sequence[str]) -> list[int]:
    codes = self.codes
    setdefault = codes.setdefault
    return [setdefault(raw, len(codes)) for raw in raws]

  @property
  def raw(self) -> list[str]:
    return list(self.codes)


def to_timestamp(token: str, path: PathLike, lineno: int | None) -> int:
  try:
    return int(token)
  except ValueError:
    return int(to_float(token, path, lineno, "timestamp"))
