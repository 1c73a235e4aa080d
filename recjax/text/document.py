"""The document model: text plus the character span of every entity in it.

A `Document` is rendered text, the `Span` of each entity (item mention, user id, user-feature
value: kind, role, item id or feature name) and where the target (the LM loss) starts.
`render_format` / `render_list` / `render_template` write templates (recjax.text.templates) with
fields that are strings, `Entity`s or lists of both, recording each entity's characters.
Corpora that produce Documents are in recjax.text.user_corpus; recjax.text.encoding maps the
spans to tokens.
"""
from __future__ import annotations

import dataclasses
import string
from typing import Any, Mapping, Sequence

from recjax.text import templates as templates_lib

# Entity kinds and their integer codes in `entity_kinds` (0 = not in an entity).
ENTITY_KINDS = {"item": 1, "user": 2, "user_feature": 3}
# Entity roles and their codes in `entity_span_roles` (0 = no role: users, user features).
ENTITY_ROLES = {"history": 1, "target": 2, "candidate": 3}


@dataclasses.dataclass(frozen=True)
class Entity:
  """A group of characters that objectives treat as one unit."""

  text: str
  kind: str  # a key of ENTITY_KINDS
  role: str = ""  # items: "history", "target", "candidate"
  item: int = 0  # internal item id for item mentions
  name: str = ""  # feature name for user features


@dataclasses.dataclass(frozen=True)
class Span:
  """Where an entity sits in a document's text: characters [start, end)."""

  start: int
  end: int
  kind: str
  role: str = ""
  item: int = 0
  name: str = ""


@dataclasses.dataclass
class Document:
  """Rendered text; loss applies to characters from `target_start` on.

  `target_start == 0`: a plain document (loss everywhere). Evaluation prompts have
  `target_start == len(text)` and the held-out answer in `meta["target_item"]`/`["target_text"]`.
  """

  text: str
  spans: tuple[Span, ...]
  target_start: int
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)
  # The tokenizer's Encoding of `text` and the (add_bos, add_eos) it was made with, when the
  # corpus already computed it (token budgets); `encode_document` reuses it.
  encoding: Any = None
  encoding_flags: tuple[bool, bool] | None = None

  def marked(self, left: str = "⟦", right: str = "⟧") -> str:
    """The text with every entity bracketed, for inspection."""
    out, pos = [], 0
    for s in self.spans:
      out += [self.text[pos:s.start], left, self.text[s.start:s.end], right]
      pos = s.end
    out.append(self.text[pos:])
    return "".join(out)


Piece = str | Entity


def render_format(fmt: str, fields: Mapping[str, Piece | Sequence[Piece]],
                  offset: int = 0) -> tuple[str, list[Span]]:
  """Formats `fmt` whose fields are strings, entities or lists of both; records entity spans.

  Spans are relative to a text that starts at character `offset`.
  """
  out: list[str] = []
  spans: list[Span] = []
  pos = offset
  for literal, name, _, _ in string.Formatter().parse(fmt):
    out.append(literal)
    pos += len(literal)
    if name is None:
      continue
    if name not in fields:
      raise KeyError(f"template field {{{name}}} has no value (template: {fmt!r})")
    value = fields[name]
    for piece in (value if isinstance(value, (list, tuple)) else [value]):
      if isinstance(piece, Entity):
        spans.append(Span(pos, pos + len(piece.text), piece.kind, piece.role, piece.item,
                          piece.name))
        text = piece.text
      else:
        text = str(piece)
      out.append(text)
      pos += len(text)
  return "".join(out), spans


def render_list(entities: Sequence[Entity], item_fmt: str, sep: str) -> list[Piece]:
  """Pieces of a list of entities, each written with `item_fmt` ({index}, {item})."""
  pieces: list[Piece] = []
  for index, entity in enumerate(entities, start=1):
    if index > 1:
      pieces.append(sep)
    for literal, name, _, _ in string.Formatter().parse(item_fmt):
      if literal:
        pieces.append(literal)
      if name == "item":
        pieces.append(entity)
      elif name == "index":
        pieces.append(str(index))
      elif name is not None:
        raise KeyError(f"list item field {{{name}}} unknown (use {{item}} and {{index}})")
  return pieces


def render_template(template: templates_lib.Template,
                    fields: Mapping[str, Piece | Sequence[Piece]],
                    with_target: bool = True) -> Document:
  """Renders prompt (+ target) of `template`; the target's characters start at `target_start`."""
  prompt, spans = render_format(template.prompt, fields)
  if not template.has_target:
    return Document(prompt, tuple(spans), 0)
  if not with_target:
    return Document(prompt, tuple(spans), len(prompt))
  target, target_spans = render_format(template.target, fields, offset=len(prompt))
  return Document(prompt + target, tuple(spans + target_spans), len(prompt))

