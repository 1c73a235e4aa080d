"""Tokenizers behind one interface: SentencePiece (trained by recjax), HF `tokenizer.json`, bytes.

Every tokenizer encodes text to ids *with character offsets*, so entity spans recorded in
characters (recjax.text.document) map to token spans (recjax.text.encoding). Special tokens
(mask kinds, sop/eop, entity markers, semantic-ID tokens) come from one registry,
`SpecialTokens`, and are added on top of any backend: a token the backend already has keeps its
id, every other one gets the next free id. The model side then grows its embedding table with
`resize_embedding_table`.

Train and inspect tokenizers from the command line (recjax/text/__main__.py):
  python -m recjax.text tokenizer train --dataset=amazon_office --vocab_size=8000 \
      --output=/tmp/office_sp            # writes /tmp/office_sp.model and /tmp/office_sp.json
  python -m recjax.text tokenizer info --tokenizer=/tmp/office_sp.model --semantic_codes=256
"""
from __future__ import annotations

import abc
import dataclasses
import io
import itertools
import os
import pathlib
import re
from typing import Iterable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Encoding:
  """Token ids of a text and the character span [start, end) each token covers."""

  ids: np.ndarray  # int32 [n]
  offsets: np.ndarray  # int32 [n, 2]

  def __len__(self) -> int:
    return len(self.ids)


# ------------------------------------------------------------------------------------------------
# Special-token registry.


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  """The special tokens recjax objectives use, in the order their ids are assigned.

  Roles: `mask` (GLM entity-level [MASK]), `smask` (sentence-level), `gmask` (document-level),
  `sop`/`eop` (start/end of a Part-B piece), `entity_start`/`entity_end` (optional entity
  markers), `rec_open`/`rec_close` (semantic-ID brackets), and `num_semantic_codes` code tokens
  `REC0 .. REC{n-1}`.
  """

  mask: str = "[MASK]"
  smask: str = "[sMASK]"
  gmask: str = "[gMASK]"
  sop: str = "<|startofpiece|>"
  eop: str = "<|endofpiece|>"
  entity_start: str = "<|entity|>"
  entity_end: str = "<|/entity|>"
  rec_open: str = "<RECTOKEN>"
  rec_close: str = "</RECTOKEN>"
  num_semantic_codes: int = 0
  semantic_code_prefix: str = "REC"
  extra: tuple[str, ...] = ()

  ROLES = ("mask", "smask", "gmask", "sop", "eop", "entity_start", "entity_end", "rec_open",
           "rec_close")

  def semantic_code(self, code: int) -> str:
    """The token string of semantic-ID code `code`."""
    if not 0 <= code < self.num_semantic_codes:
      raise ValueError(f"semantic code {code} outside [0, {self.num_semantic_codes})")
    return f"{self.semantic_code_prefix}{code}"

  def tokens(self) -> list[str]:
    """All special token strings, in id-assignment order."""
    out = [getattr(self, role) for role in self.ROLES]
    out += [f"{self.semantic_code_prefix}{i}" for i in range(self.num_semantic_codes)]
    out += list(self.extra)
    if len(set(out)) != len(out):
      raise ValueError(f"duplicate special tokens in {out[:20]}...")
    return out


# ------------------------------------------------------------------------------------------------
# The interface.


class Tokenizer(abc.ABC):
  """Encode with offsets, decode, vocabulary size and special-token ids.

  Subclasses implement the `_backend_*` methods; this class adds special tokens on top: text is
  split at occurrences of registered special tokens, the pieces in between go to the backend.
  """

  def __init__(self):
    self._added: dict[str, int] = {}  # special token -> id, in insertion order
    self._added_by_id: dict[int, str] = {}
    self._literal_re: re.Pattern | None = None
    self._code_prefix = ""

  # Backend hooks. --------------------------------------------------------------------------------
  @abc.abstractmethod
  def _backend_encode(self, text: str) -> tuple[Sequence[int], Sequence[tuple[int, int]]]:
    """Ids and character offsets of `text` without any special handling."""

  @abc.abstractmethod
  def _backend_decode(self, ids: Sequence[int]) -> str:
    """Text of backend ids."""

  @property
  @abc.abstractmethod
  def _backend_vocab_size(self) -> int:
    """Number of ids the backend itself defines."""

  @abc.abstractmethod
  def _backend_token_to_id(self, token: str) -> int | None:
    """Id of `token` if the backend has it as a single token, else None."""

  # Ids every tokenizer has. ------------------------------------------------------------------------
  pad_id: int
  bos_id: int
  eos_id: int
  unk_id: int

  @property
  def vocab_size(self) -> int:
    """Size of the id space including added special tokens (the embedding table's rows)."""
    return max(self._backend_vocab_size, max(self._added_by_id, default=-1) + 1)

  def add_special_tokens(self, tokens: SpecialTokens | Iterable[str]) -> int:
    """Registers special tokens (idempotent) and returns the new vocabulary size."""
    if isinstance(tokens, SpecialTokens):
      code_prefix = tokens.semantic_code_prefix if tokens.num_semantic_codes else ""
      tokens = tokens.tokens()
    else:
      tokens, code_prefix = list(tokens), ""
    next_id = self.vocab_size
    for token in tokens:
      if token in self._added:
        continue
      existing = self._backend_token_to_id(token)
      token_id = existing if existing is not None else next_id
      next_id = max(next_id, token_id + 1)
      self._added[token] = token_id
      self._added_by_id[token_id] = token
    if code_prefix:
      self._code_prefix = code_prefix
    # Semantic codes are matched by one pattern plus a set lookup, so 10k of them stay fast.
    code_re = re.compile(rf"^{re.escape(self._code_prefix)}\d+$") if self._code_prefix else None
    literals = sorted((t for t in self._added if not (code_re and code_re.match(t))),
                      key=len, reverse=True)
    parts = [re.escape(t) for t in literals]
    if self._code_prefix:
      parts.append(rf"(?<![0-9A-Za-z]){re.escape(self._code_prefix)}\d+(?![0-9A-Za-z])")
    self._literal_re = re.compile("|".join(parts)) if parts else None
    return self.vocab_size

  @property
  def special_tokens(self) -> dict[str, int]:
    """Added special token -> id."""
    return dict(self._added)

  def token_to_id(self, token: str) -> int | None:
    """Id of a special token or of a single backend token; None if neither."""
    if token in self._added:
      return self._added[token]
    return self._backend_token_to_id(token)

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> Encoding:
    """Ids of `text` with the character span of each token (BOS/EOS get empty spans)."""
    ids: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    if add_bos:
      ids.append(np.array([self.bos_id], np.int32))
      offsets.append(np.zeros((1, 2), np.int32))
    pos = 0
    if self._literal_re is not None:
      for m in self._literal_re.finditer(text):
        if m.group() not in self._added:
          continue
        self._encode_plain(text, pos, m.start(), ids, offsets)
        ids.append(np.array([self._added[m.group()]], np.int32))
        offsets.append(np.array([[m.start(), m.end()]], np.int32))
        pos = m.end()
    self._encode_plain(text, pos, len(text), ids, offsets)
    if add_eos:
      ids.append(np.array([self.eos_id], np.int32))
      offsets.append(np.full((1, 2), len(text), np.int32))
    if not ids:
      return Encoding(np.zeros(0, np.int32), np.zeros((0, 2), np.int32))
    return Encoding(np.concatenate(ids), np.concatenate(offsets))

  def _encode_plain(self, text, start, end, ids, offsets):
    if start >= end:
      return
    piece_ids, piece_offsets = self._backend_encode(text[start:end] if start or end < len(text)
                                                    else text)
    n = len(piece_ids)
    if not n:
      return
    piece_ids = np.asarray(piece_ids, np.int32)
    if not isinstance(piece_offsets, np.ndarray):  # list of pairs: fromiter is ~3x faster
      piece_offsets = np.fromiter(itertools.chain.from_iterable(piece_offsets), np.int32, 2 * n)
    piece_offsets = piece_offsets.reshape(n, 2)
    ids.append(piece_ids)
    offsets.append(piece_offsets + start if start else piece_offsets)

  def decode(self, ids: Sequence[int] | np.ndarray, skip_special: bool = False) -> str:
    """Text of `ids`; added special tokens are written as their strings unless skipped."""
    out, run = [], []
    for i in np.asarray(ids, np.int64).tolist():
      if i in self._added_by_id:
        if run:
          out.append(self._backend_decode(run))
          run = []
        if not skip_special:
          out.append(self._added_by_id[i])
      else:
        run.append(i)
    if run:
      out.append(self._backend_decode(run))
    return "".join(out)

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_literal_re"] = None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self.add_special_tokens([])  # rebuilds the split pattern


# ------------------------------------------------------------------------------------------------
# Backends.


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes: ids 0 pad, 1 unk, 2 bos, 3 eos, 4 + byte. No files, exact offsets."""

  pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3
  _OFFSET = 4

  def _backend_encode(self, text):
    data = text.encode("utf-8")
    ids = np.frombuffer(data, np.uint8).astype(np.int32) + self._OFFSET
    if len(data) == len(text):
      starts = np.arange(len(text), dtype=np.int32)
    else:
      starts = np.repeat(np.arange(len(text), dtype=np.int32),
                         [len(c.encode("utf-8")) for c in text])
    return ids, np.stack([starts, starts + 1], axis=1)

  def _backend_decode(self, ids):
    data = bytes(i - self._OFFSET for i in ids if self._OFFSET <= i < self._OFFSET + 256)
    return data.decode("utf-8", errors="replace")

  @property
  def _backend_vocab_size(self):
    return self._OFFSET + 256

  def _backend_token_to_id(self, token):
    data = token.encode("utf-8")
    return data[0] + self._OFFSET if len(data) == 1 else None


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model (e.g. one trained by `train_sentencepiece`)."""

  def __init__(self, model_file: str | os.PathLike | None = None,
               model_proto: bytes | None = None):
    super().__init__()
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if (model_file is None) == (model_proto is None):
      raise ValueError("give exactly one of model_file and model_proto")
    if model_file is not None:
      model_proto = pathlib.Path(model_file).read_bytes()
    self._proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.unk_id = self._sp.unk_id()
    self.bos_id = self._sp.bos_id()
    self.eos_id = self._sp.eos_id()
    pad = self._sp.pad_id()
    self.pad_id = pad if pad >= 0 else self.eos_id

  def _backend_encode(self, text):
    out = self._sp.encode(text, return_type="offset_mapping")
    return out["ids"], out["offsets"]

  def _backend_decode(self, ids):
    return self._sp.decode(list(ids))

  @property
  def _backend_vocab_size(self):
    return self._sp.vocab_size()

  def _backend_token_to_id(self, token):
    i = self._sp.piece_to_id(token)
    return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else i

  def __getstate__(self):
    state = super().__getstate__()
    state.pop("_sp")
    return state

  def __setstate__(self, state):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    state["_sp"] = spm.SentencePieceProcessor(model_proto=state["_proto"])
    super().__setstate__(state)


_COMMON_NAMES = {
    "bos": ("<s>", "<bos>", "<|begin_of_text|>", "[CLS]", "<|endoftext|>"),
    "eos": ("</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "[SEP]"),
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|finetune_right_pad_id|>"),
    "unk": ("<unk>", "[UNK]"),
}


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizer.json` (imported checkpoints), loaded with `tokenizers`.

  BOS/EOS/PAD/UNK are found by name (explicit arguments win over common names such as `<s>`,
  `<|endoftext|>`); a missing PAD falls back to EOS (padding is loss-masked anyway), a missing BOS
  to EOS (as GPT-2 does). Text around a registered special token is encoded piece by piece, so
  for Metaspace tokenizers with prepend_scheme="first" each piece gets the word-start marker;
  compare with `tokenizers`' own encoding before relying on exact ids around special tokens.
  """

  def __init__(self, path: str | os.PathLike, bos_token: str | None = None,
               eos_token: str | None = None, pad_token: str | None = None,
               unk_token: str | None = None):
    super().__init__()
    from tokenizers import Tokenizer as _HF  # pylint: disable=g-import-not-at-top
    path = pathlib.Path(path)
    if path.is_dir():
      path = path / "tokenizer.json"
    self._json = path.read_text()
    self._hf = _HF.from_str(self._json)

    def find(kind, explicit):
      names = (explicit,) if explicit else _COMMON_NAMES[kind]
      for name in names:
        i = self._hf.token_to_id(name)
        if i is not None:
          return i
      if explicit:
        raise ValueError(f"{kind} token {explicit!r} is not in {path}")
      return None

    self.eos_id = find("eos", eos_token)
    if self.eos_id is None:
      raise ValueError(f"no EOS token found in {path}; pass eos_token=")
    bos = find("bos", bos_token)
    self.bos_id = self.eos_id if bos is None else bos
    pad = find("pad", pad_token)
    self.pad_id = self.eos_id if pad is None else pad
    unk = find("unk", unk_token)
    self.unk_id = self.pad_id if unk is None else unk

  def _backend_encode(self, text):
    enc = self._hf.encode(text, add_special_tokens=False)
    return enc.ids, enc.offsets

  def _backend_decode(self, ids):
    return self._hf.decode(list(ids), skip_special_tokens=False)

  @property
  def _backend_vocab_size(self):
    return self._hf.get_vocab_size(with_added_tokens=True)

  def _backend_token_to_id(self, token):
    return self._hf.token_to_id(token)

  def __getstate__(self):
    state = super().__getstate__()
    state.pop("_hf")
    return state

  def __setstate__(self, state):
    from tokenizers import Tokenizer as _HF  # pylint: disable=g-import-not-at-top
    state["_hf"] = _HF.from_str(state["_json"])
    super().__setstate__(state)


def load_tokenizer(path: str | os.PathLike,
                   special_tokens: SpecialTokens | None = None) -> Tokenizer:
  """Loads "byte", a SentencePiece `.model`, or an HF `tokenizer.json` (file or directory)."""
  path = str(path)
  if path == "byte":
    tok = ByteTokenizer()
  elif path.endswith(".model"):
    tok = SentencePieceTokenizer(path)
  elif path.endswith(".json") or os.path.isdir(path):
    tok = HFTokenizer(path)
  else:
    raise ValueError(f"unknown tokenizer {path!r}: expected 'byte', a SentencePiece .model file, "
                     "or a tokenizer.json file or directory")
  if special_tokens is not None:
    tok.add_special_tokens(special_tokens)
  return tok


# ------------------------------------------------------------------------------------------------
# Training and embedding resizing.


def train_sentencepiece(texts: Iterable[str], output: str | os.PathLike, vocab_size: int,
                        model_type: str = "unigram", character_coverage: float = 0.9995,
                        max_sentence_length: int = 16384,
                        input_sentence_size: int = 2_000_000, seed: int = 0) -> pathlib.Path:
  """Trains a SentencePiece model on `texts`; writes `<output>.model` and returns its path.

  Ids: 0 pad, 1 unk, 2 bos, 3 eos. Special tokens are *not* baked in: add them with
  `Tokenizer.add_special_tokens`. If the corpus is too small for `vocab_size`, the model gets
  the largest vocabulary the corpus supports (check `vocab_size` of the result).
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  output = pathlib.Path(output)
  if output.suffix == ".model":
    output = output.with_suffix("")
  output.parent.mkdir(parents=True, exist_ok=True)
  model = io.BytesIO()
  spm.set_random_generator_seed(seed)
  try:
    _train_spm(spm, texts, model, vocab_size, model_type, character_coverage,
               max_sentence_length, input_sentence_size)
  except RuntimeError as e:
    needed = re.search(r"Vocabulary size is smaller than required_chars\. \d+ vs (\d+)", str(e))
    if not needed:
      raise
    raise ValueError(
        f"a {vocab_size}-piece SentencePiece model is too small: the corpus's distinct "
        f"characters, the special ids and the 256 byte-fallback pieces need "
        f"{int(needed.group(1))}; raise config.lm.tokenizer_vocab_size to at least that") from e
  path = output.with_suffix(".model")
  path.write_bytes(model.getvalue())
  return path


def _train_spm(spm, texts, model, vocab_size, model_type, character_coverage,
               max_sentence_length, input_sentence_size) -> None:
  spm.SentencePieceTrainer.train(
      sentence_iterator=(t for t in texts if t.strip()),
      model_writer=model,
      vocab_size=vocab_size,
      model_type=model_type,
      character_coverage=character_coverage,
      max_sentence_length=max_sentence_length,
      input_sentence_size=input_sentence_size,
      shuffle_input_sentence=True,
      seed_sentencepiece_size=1_000_000,
      pad_id=0, unk_id=1, bos_id=2, eos_id=3,
      hard_vocab_limit=False,
      byte_fallback=True,
      split_digits=True,
      minloglevel=2,
      num_threads=os.cpu_count() or 1,
  )


def resize_embedding_table(table: np.ndarray, new_size: int,
                           rng: np.random.Generator | int = 0,
                           noise_scale: float = 1e-2) -> np.ndarray:
  """Appends rows to a [vocab, dim] table, each the mean of the old rows plus small noise.

  The noise is Gaussian with per-dimension standard deviation `noise_scale` times the old rows'
  standard deviation, so new tokens start close to an "average" token but are distinguishable.
  """
  table = np.asarray(table)
  old_size = table.shape[0]
  if new_size < old_size:
    raise ValueError(f"new_size {new_size} is smaller than the table ({old_size} rows)")
  if new_size == old_size:
    return table.copy()
  rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
  work = table.astype(np.float64)
  mean = work.mean(axis=0)
  std = work.std(axis=0) if old_size > 1 else np.ones_like(mean)
  extra = mean + rng.standard_normal((new_size - old_size,) + table.shape[1:]) * std * noise_scale
  return np.concatenate([table, extra.astype(table.dtype)], axis=0)
