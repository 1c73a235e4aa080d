"""Items written as semantic IDs: one special token per code, in any template.

A semantic-ID file (`recjax.curriculum.semantic_ids.SemanticIds.save`: RQ-KMeans, RQ-VAE or
SAE codes) gives item i the digits c_0 .. c_{D-1}. Digit d's code c is the special token
`REC{offset_d + c}`, where offset_d is the number of codes of the digits before it (digit d has
codes 0..max over items), so no two digits share a token, except that the file's
`shared_digits` leading digits (the SAE's k positions, which index one dictionary of latents)
share one range: latent 812 is `REC812` at every position. The tokenizer registers
`num_code_tokens(codes, shared_digits)` of them (`config.text.semantic_codes`; 0 = exactly
those). An item is then written, by `config.text.item_format`:

    text          Vintage Film Camera                                (the catalogue's text)
    semantic_id   <RECTOKEN> REC12 REC259 REC600 REC768 </RECTOKEN>
    both          <RECTOKEN> REC12 REC259 REC600 REC768 </RECTOKEN> Vintage Film Camera

Every template renders items from the catalogue, so every template (histories, targets,
candidates, P5 prompts, CALRec pairs) follows the format, and a trie over the catalogue's token
sequences (`models.decoding.Trie`, the constrained evaluators) constrains decoding to real
items' semantic IDs.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from recjax.text import tokenizer as tokenizer_lib
from recjax.text.item_text import ItemCatalogue

ITEM_FORMATS = ("text", "semantic_id", "both")


def digit_offsets(codes: np.ndarray, shared_digits: int = 0) -> np.ndarray:
  """int64 [D + 1]: the first code token of each digit, and (last) the number of tokens; the
  first `shared_digits` digits share one range (offset 0, as many tokens as their largest
  code + 1)."""
  codes = np.asarray(codes)[1:]  # row 0 is padding
  if codes.ndim != 2 or not len(codes):
    raise ValueError(f"semantic-ID codes must be [items + 1, digits], got {codes.shape}")
  if codes.min() < 0:
    raise ValueError("semantic-ID codes are negative for some item (row 0 is the only padding)")
  if not 0 <= shared_digits <= codes.shape[1]:
    raise ValueError(f"shared_digits={shared_digits} outside 0..{codes.shape[1]} (the digits)")
  sizes = codes.max(axis=0).astype(np.int64) + 1
  if shared_digits:
    shared = sizes[:shared_digits].max()
    return np.concatenate([np.zeros(shared_digits, np.int64),
                           shared + np.concatenate([[0], np.cumsum(sizes[shared_digits:])])])
  return np.concatenate([[0], np.cumsum(sizes)])


def num_code_tokens(codes: np.ndarray, shared_digits: int = 0) -> int:
  """How many `REC<n>` tokens the codes need."""
  return int(digit_offsets(codes, shared_digits)[-1])


def code_texts(codes: np.ndarray, special: tokenizer_lib.SpecialTokens | None = None,
               shared_digits: int = 0) -> list[str]:
  """`<RECTOKEN> REC.. REC.. </RECTOKEN>` of every item (index 0: "")."""
  special = special or tokenizer_lib.SpecialTokens()
  codes = np.asarray(codes)
  offsets = digit_offsets(codes, shared_digits)[:-1]
  prefix = special.semantic_code_prefix
  return [""] + [" ".join([special.rec_open] + [f"{prefix}{int(o + c)}" for o, c in
                                                zip(offsets, row)] + [special.rec_close])
                 for row in codes[1:]]


def load_semantic_ids(path: str):
  """The `SemanticIds` of a semantic-ID file, or of WORKDIR/semantic_ids.npz."""
  from recjax.curriculum.semantic_ids import SemanticIds  # pylint: disable=g-import-not-at-top
  path = str(path)
  if os.path.isdir(path):
    path = os.path.join(path, "semantic_ids.npz")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config.text.semantic_ids={path!r}: no such file (write one with "
                            "SemanticIds.save or python -m recjax.main "
                            "--config=configs/semantic_ids.py)")
  return SemanticIds.load(path)


def format_catalogue(catalogue: ItemCatalogue, codes: np.ndarray, item_format: str,
                     tokenizer=None, shared_digits: int = 0) -> ItemCatalogue:
  """`catalogue` with every item written in `item_format` (tokenized again with `tokenizer`).

  Raises:
    ValueError: an unknown format, or codes for another number of items.
  """
  if item_format not in ITEM_FORMATS:
    raise ValueError(f"config.text.item_format={item_format!r}: choose from {ITEM_FORMATS}")
  if item_format == "text":
    return catalogue
  codes = np.asarray(codes)
  if len(codes) != catalogue.num_items + 1:
    raise ValueError(f"the semantic IDs cover {len(codes) - 1} items but {catalogue.name} has "
                     f"{catalogue.num_items}: they were made for another catalogue")
  if tokenizer is not None:
    have = _registered_codes(tokenizer)
    need = num_code_tokens(codes, shared_digits)
    if have < need:
      raise ValueError(f"the tokenizer registers {have} semantic-code tokens but the IDs need "
                       f"{need}: set config.text.semantic_codes to 0 (automatic) or >= {need}")
  ids = code_texts(codes, shared_digits=shared_digits)
  if item_format == "semantic_id":
    texts = ids
  else:
    texts = [""] + [f"{s} {t}" for s, t in zip(ids[1:], catalogue.texts[1:])]
  tokens = None
  if tokenizer is not None:
    from recjax.data.canonical import Sequences  # pylint: disable=g-import-not-at-top
    tokens = Sequences.from_lists([tokenizer.encode(t).ids for t in texts])
  return dataclasses.replace(catalogue, texts=texts, tokens=tokens)


def _registered_codes(tokenizer) -> int:
  prefix = tokenizer_lib.SpecialTokens().semantic_code_prefix
  return sum(1 for t in tokenizer.special_tokens if t.startswith(prefix) and t[len(prefix):]
             .isdigit())
