"""Every text template recjax renders, in one place.

A template is a pair of `str.format` strings: `prompt` (what the model reads) and `target` (what
it must write; loss is on the target only). A template with an empty target is a plain document
(loss on every token), used for continual pre-training and GLM blank infilling.

Fields a template may use (all item and user mentions become entity spans, see document.py):
  {user}        the user: "user_<raw id>" plus "(<feature>: <value>, ...)" when the dataset has
                user features; the id and each feature value are entities
  {history}     the user's items, oldest first, each written with `list_item` and joined with
                `list_sep`; `{index}` in `list_item` is the 1-based position in the list
  {target}      the next item (sequential families) / the positive item (direct family)
  {item}        the item the prompt is about (rating, explanation, review, yes/no direct)
  {candidates}  the positive item mixed with sampled negatives, written like {history}
  {answer}      "yes" / "no" for the yes/no direct-recommendation prompts
  {rating} {review} {summary} {explanation}   per-interaction extras; a template using one is
                skipped for data that lacks it. {rating} comes from `InteractionData.ratings`
                when the reader filled it (MovieLens, rating columns); the others only from
                `extras` passed to the corpus
  {domain}      the domain tag (a dataset's name, or the name given in a mixture)

Families: `calrec` (CALRec-style history -> next item, [open] exact wording), `profile` (whole
history as one document, RecSysLLM pre-training), `item` (item text alone), and the five P5
families `sequential`, `direct`, `rating`, `explanation`, `review` (wording after P5, Geng et al.
2022, paraphrased). In each P5 family the templates marked `held_out=True` are never used for
training by default; they test zero-shot generalisation to unseen prompts.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

_FIELD_RE = re.compile(r"\{(\w+)\}")
EXTRA_FIELDS = ("rating", "review", "summary", "explanation")


@dataclasses.dataclass(frozen=True)
class Template:
  """One prompt/target pair of a family."""

  name: str
  family: str
  prompt: str
  target: str = ""
  held_out: bool = False
  list_item: str = "{item}"
  list_sep: str = ", "

  @property
  def fields(self) -> set[str]:
    return set(_FIELD_RE.findall(self.prompt + self.target))

  @property
  def needs(self) -> tuple[str, ...]:
    """Per-interaction extras (rating, review, ...) this template needs."""
    return tuple(f for f in EXTRA_FIELDS if f in self.fields)

  @property
  def has_target(self) -> bool:
    return bool(self.target)


_T = Template
TEMPLATES: tuple[Template, ...] = (
    # CALRec: history -> next item, few-shot-like numbered list. [open] the paper's exact wording.
    _T("calrec", "calrec",
       "Below are the items a user bought on {domain}, oldest first.\n{history}\n"
       "The next item the user bought:\n",
       "{target}", list_item="Item {index}: {item}", list_sep="\n"),
    # Whole-history document (RecSysLLM pre-training, GLM infilling): no target, loss everywhere.
    _T("profile", "profile", "{user} bought these items on {domain}: {history}.", "",
       list_sep="; "),
    # Item text alone.
    _T("item_text", "item", "{item}"),
    _T("item_domain", "item", "An item sold on {domain}: {item}"),
    # P5 family 2: sequential recommendation.
    _T("p5_seq_1", "sequential",
       "Given the following purchase history of {user}: {history}, predict the next possible "
       "item to be purchased by the user.\n", "{target}", list_sep="; "),
    _T("p5_seq_2", "sequential",
       "I find the purchase history list of {user}: {history}. I wonder what is the next item "
       "to recommend to the user. Can you help me decide?\n", "{target}", list_sep="; "),
    _T("p5_seq_3", "sequential",
       "Here is the purchase history list of {user}: {history}. Try to recommend the next item "
       "to the user.\n", "{target}", list_sep="; "),
    _T("p5_seq_4", "sequential",
       "{user} has purchased {history}. Predict the next item the user will buy.\n", "{target}",
       list_sep="; "),
    _T("p5_seq_heldout", "sequential",
       "According to the purchase history of {user}: {history}. Can you recommend the next "
       "possible item to the user?\n", "{target}", held_out=True, list_sep="; "),
    # P5 family 5: direct recommendation (yes/no, and choose among candidates).
    _T("p5_direct_1", "direct",
       "Will {user} likely interact with {item}? Answer yes or no.\n", "{answer}"),
    _T("p5_direct_2", "direct",
       "Which item of the following to recommend for {user}? {candidates}\n", "{target}",
       list_sep="; "),
    _T("p5_direct_3", "direct",
       "Choose the best item from the candidates to recommend for {user}: {candidates}\n",
       "{target}", list_sep="; "),
    _T("p5_direct_heldout", "direct",
       "We want to make a recommendation for {user}. Select the best item from these "
       "candidates: {candidates}\n", "{target}", held_out=True, list_sep="; "),
    # P5 family 1: rating prediction.
    _T("p5_rating_1", "rating",
       "Which star rating will {user} give {item}? (1 being lowest and 5 being highest)\n",
       "{rating}"),
    _T("p5_rating_2", "rating",
       "How will {user} rate this product: {item}? (1 being lowest and 5 being highest)\n",
       "{rating}"),
    _T("p5_rating_heldout", "rating",
       "Predict {user}'s preference towards {item} (1 being lowest and 5 being highest).\n",
       "{rating}", held_out=True),
    # P5 family 3: explanation generation.
    _T("p5_explanation_1", "explanation",
       "Generate an explanation for {user} about this product: {item}\n", "{explanation}"),
    _T("p5_explanation_2", "explanation",
       "Help {user} generate a {rating}-star explanation about this product: {item}\n",
       "{explanation}"),
    _T("p5_explanation_heldout", "explanation",
       "Knowing that {user} bought {item}, predict the explanation the user will give for it.\n",
       "{explanation}", held_out=True),
    # P5 family 4: review summarisation / rating from review.
    _T("p5_review_1", "review",
       "Write a short sentence to summarize the following product review from {user}: "
       "{review}\n", "{summary}"),
    _T("p5_review_2", "review",
       "Given the following review written by {user} about {item}: {review} Predict the rating "
       "the user gave.\n", "{rating}"),
    _T("p5_review_heldout", "review",
       "Predict the associated rating from the review written by {user}: {review}\n", "{rating}",
       held_out=True),
)
del _T

BY_NAME: dict[str, Template] = {t.name: t for t in TEMPLATES}
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(t.family for t in TEMPLATES))
P5_FAMILIES = ("sequential", "direct", "rating", "explanation", "review")


def select(spec: str | Template | Iterable[str | Template]) -> list[Template]:
  """Templates named by `spec`.

  `spec` is a template, a template name ("p5_seq_1"), a family ("sequential": its training
  templates), "<family>:held_out" (its held-out templates), "<family>:all", "p5" (training
  templates of every P5 family), or a comma-separated string / list of these.
  """
  if isinstance(spec, Template):
    return [spec]
  if isinstance(spec, str):
    spec = [s.strip() for s in spec.split(",") if s.strip()]
  out: list[Template] = []
  for item in spec:
    if isinstance(item, Template):
      out.append(item)
      continue
    family, _, which = item.partition(":")
    if item in BY_NAME:
      out.append(BY_NAME[item])
    elif family == "p5" or family in FAMILIES:
      families = P5_FAMILIES if family == "p5" else (family,)
      if which not in ("", "held_out", "all"):
        raise ValueError(f"bad template selector {item!r}: use <family>, <family>:held_out "
                         "or <family>:all")
      out.extend(t for t in TEMPLATES if t.family in families and
                 (which == "all" or t.held_out == (which == "held_out")))
    else:
      raise ValueError(f"unknown template or family {item!r}; families: {FAMILIES}, "
                       f"templates: {sorted(BY_NAME)}")
  return list(dict.fromkeys(out))


def held_out_names() -> Sequence[str]:
  """Names of the held-out (zero-shot evaluation) templates."""
  return [t.name for t in TEMPLATES if t.held_out]


# Readable domain tags rendered as {domain}; datasets not listed use their registry name.
DOMAIN_NAMES = {
    "amazon_office": "Amazon Office Products",
    "amazon_scientific": "Amazon Industrial and Scientific",
    "amazon_games6k": "Amazon Video Games",
    "amazon_video": "Amazon Video Games",
    "amazon_beauty": "Amazon Beauty",
    "ml-100k": "MovieLens",
    "ml-1m": "MovieLens",
    "ml-1m-pos": "MovieLens",
}
