"""Item text, templates, entity spans (characters and tokens) and token budgets."""
import numpy as np
import pytest

from recjax.text import tokenizer as tokenizer_lib
from recjax.data.canonical import InteractionData, Sequences
from recjax.data.splits import leave_one_out
from recjax.data.synthetic import make_synthetic
from recjax.text import document, encoding, item_text, templates, user_corpus


@pytest.fixture(scope="module")
def toy():
  data = make_synthetic(num_users=60, num_items=200, num_clusters=8, seed=1, min_length=4,
                        max_length=30)
  return data, leave_one_out(data)


@pytest.fixture(scope="module")
def sp_tokenizer(toy, tmp_path_factory):
  data, _ = toy
  texts = [str(t) for t in data.item_text["title"][1:]] * 3
  texts += [user_corpus.UserCorpus(data, leave_one_out(data), "p5:all,calrec,profile")[i].text
            for i in range(40)]
  path = tokenizer_lib.train_sentencepiece(texts, tmp_path_factory.mktemp("sp") / "toy", 500)
  tok = tokenizer_lib.SentencePieceTokenizer(path)
  tok.add_special_tokens(tokenizer_lib.SpecialTokens())
  return tok


# ------------------------------------------------------------------------------------------------
# Item text.


def test_clean_text():
  assert item_text.clean_text("AT&amp;amp;T <b>Phone</b><br/>x") == "AT&T Phone x"
  assert item_text.clean_text("caf\u00c3\u00a9 it\u00e2\u20ac\u2122s") == "caf\u00e9 it\u2019s"
  assert item_text.clean_text("  a \n\t b\u00a0c ") == "a b c"
  assert item_text.clean_text("5 < 6 and 7 > 3") == "5 < 6 and 7 > 3"
  assert item_text.clean_text("") == ""


def test_truncate_words_is_deterministic_prefix():
  text = "Heavy-duty staples are ideal for jobs such as insulation"
  for n in range(1, len(text) + 3):
    out = item_text.truncate_words(text, n)
    assert len(out) <= n and text.startswith(out)
    if n >= 10:
      assert text[len(out):len(out) + 1] in ("", " ")  # cut at a word boundary
  assert item_text.truncate_words("abcdefgh", 3) == "abc"


def test_render_item_fields_limits_and_fallback():
  config = item_text.ItemTextConfig(fields=("title", "brand", "categories", "price"),
                                    max_chars={"title": 12}, total_max_chars=60)
  fields = {"title": "Northwestern Bell Big-Button Phone", "brand": "NB",
            "categories": "Office Electronics, Telephones & Accessories, Corded, Big Buttons",
            "price": "12.5"}
  text = item_text.render_item(fields, "B0001", config)
  assert text.startswith("Northwestern; Brand: NB; Category: Telephones")
  assert len(text) <= 60 and "Office Electronics" not in text  # 3 most specific categories
  assert item_text.render_item({"title": " ", "brand": ""}, "B0001", config) == "item B0001"
  tmpl = item_text.ItemTextConfig(fields=("title", "brand", "price"),
                                  template="{title} by {brand}, {price}.")
  assert item_text.render_item({"title": "Pen", "price": "3"}, "x", tmpl) == "Pen, $3.00."
  assert item_text.render_item({"title": "Pen", "brand": "Bic"}, "x", tmpl) == "Pen by Bic."


def test_catalogue_lookup_tokens_and_cache(tmp_path):
  seqs = Sequences.from_lists([[1, 2, 3], [3, 4]])
  data = InteractionData(
      "tiny", seqs, np.array(["u0", "u1"]), np.array(["<pad>", "a", "b", "c", "d"]),
      item_text={"title": np.array(["", "Pen", "Pen", "", "Lamp &amp; shade"])})
  tok = tokenizer_lib.ByteTokenizer()
  cat = item_text.ItemCatalogue.build(data, tokenizer=tok, cache_dir=tmp_path)
  assert cat.texts == ["", "Pen", "Pen", "item c", "Lamp & shade"]
  assert cat.has_text.tolist() == [False, True, True, False, True]
  assert cat.ids_of("Pen") == [1, 2] and cat.ids_of("nope") == []
  np.testing.assert_array_equal(cat.tokens[4], tok.encode("Lamp & shade").ids)
  assert len(list(tmp_path.iterdir())) == 1
  again = item_text.ItemCatalogue.build(data, tokenizer=tok, cache_dir=tmp_path)
  assert again.texts == cat.texts
  np.testing.assert_array_equal(again.tokens.values, cat.tokens.values)
  other = item_text.ItemCatalogue.build(data, item_text.ItemTextConfig.short(), tokenizer=tok,
                                        cache_dir=tmp_path)
  assert len(list(tmp_path.iterdir())) == 2 and other.texts[1] == "Pen"


# ------------------------------------------------------------------------------------------------
# Templates and rendering.


def test_template_selection_and_held_out():
  seq = templates.select("sequential")
  assert seq and all(t.family == "sequential" and not t.held_out for t in seq)
  held = templates.select("sequential:held_out")
  assert [t.name for t in held] == ["p5_seq_heldout"]
  for family in templates.P5_FAMILIES:
    assert templates.select(f"{family}:held_out"), family  # every P5 family holds one out
    assert templates.select(family), family
  assert set(templates.held_out_names()) == {t.name for t in templates.TEMPLATES if t.held_out}
  assert not any(t.held_out for t in templates.select("p5"))
  assert [t.name for t in templates.select("calrec,p5_seq_1")] == ["calrec", "p5_seq_1"]
  with pytest.raises(ValueError, match="unknown template"):
    templates.select("nope")


def test_render_format_spans():
  items = [document.Entity("Red Pen", "item", "history", 1),
           document.Entity("Blue Pencil", "item", "history", 2)]
  text, spans = document.render_format(
      "{user} bought {history}.",
      {"user": [document.Entity("user_7", "user")],
       "history": document.render_list(items, "{index}. {item}", "; ")})
  assert text == "user_7 bought 1. Red Pen; 2. Blue Pencil."
  assert [text[s.start:s.end] for s in spans] == ["user_7", "Red Pen", "Blue Pencil"]
  assert [s.item for s in spans] == [0, 1, 2]


@pytest.mark.parametrize("spec", ["calrec", "profile", "p5", "p5:held_out"])
def test_user_corpus_spans_and_eval_prompts(toy, spec):
  data, split = toy
  corpus = user_corpus.UserCorpus(data, split, spec, num_candidates=5, template_choice="all")
  seen = set()
  for i in range(len(corpus)):
    doc = corpus[i]
    seen.add(doc.meta["template"])
    for s in doc.spans:
      expected = (corpus.catalogue.texts[s.item] if s.kind == "item" else None)
      if expected is not None:
        assert doc.text[s.start:s.end] == expected
    assert all(a.end <= b.start for a, b in zip(doc.spans, doc.spans[1:]))
    kinds = {s.kind for s in doc.spans}
    if "{user}" in templates.BY_NAME[doc.meta["template"]].prompt:
      assert {"user", "user_feature"} <= kinds  # synthetic data has a user feature
    if doc.target_start:
      target = doc.text[doc.target_start:]
      assert target == doc.meta["target_text"]
  assert seen == {t.name for t in corpus.templates}
  if "profile" not in spec:
    test = user_corpus.UserCorpus(data, split, spec, part="test", num_candidates=5)
    for i in range(len(test)):
      doc = test[i]
      assert doc.target_start == len(doc.text)
      assert doc.meta["target_item"] == split.test.targets[i]
      targets = [s.item for s in doc.spans if s.role == "target"]
      if doc.meta["family"] == "direct":  # the positive is one of the candidates, by design
        assert targets in ([], [doc.meta["target_item"]])
      else:
        assert not targets
        assert doc.meta["target_item"] not in [s.item for s in doc.spans] or (
            doc.meta["target_item"] in split.test.histories[i])  # repeat consumption


def test_candidates_and_yes_no(toy):
  data, split = toy
  corpus = user_corpus.UserCorpus(data, split, "p5_direct_2", num_candidates=7, seed=3)
  for i in range(len(corpus)):
    doc = corpus[i]
    cands = [s.item for s in doc.spans if s.role in ("candidate", "target") and
             s.start < doc.target_start]
    user_items = set(data.sequences[doc.meta["user"]].tolist())
    assert len(cands) == len(set(cands)) == 8 and doc.meta["target_item"] in cands
    assert not (set(cands) - {doc.meta["target_item"]}) & user_items
  np.testing.assert_equal(corpus[5].text, user_corpus.UserCorpus(
      data, split, "p5_direct_2", num_candidates=7, seed=3)[5].text)  # deterministic
  yes_no = user_corpus.UserCorpus(data, split, "p5_direct_1")
  answers = [yes_no[i].meta["target_text"] for i in range(len(yes_no))]
  assert set(answers) == {"yes", "no"}


def test_extras_enable_rating_and_review_families(toy):
  data, split = toy
  n = data.num_interactions
  extras = {"rating": (np.arange(n) % 5 + 1).astype(np.float32),
            "review": np.array([f"review {i}" for i in range(n)]),
            "summary": np.array([f"summary {i}" for i in range(n)]),
            "explanation": np.array([f"because {i}" for i in range(n)])}
  plain = user_corpus.UserCorpus(data, split, "calrec,rating")
  assert [t.name for t in plain.templates] == ["calrec"] and "p5_rating_1" in plain.skipped
  corpus = user_corpus.UserCorpus(data, split, "p5:all", extras=extras, template_choice="all")
  assert len(corpus.templates) == len(templates.select("p5:all"))
  for i in range(len(corpus)):
    doc = corpus[i]
    user, _, target, interaction = corpus.example(i // len(corpus.templates))
    if doc.meta["family"] == "rating":
      assert doc.meta["target_text"] == f"{extras['rating'][interaction]:g}"
    if doc.meta["template"] == "p5_review_1":
      assert f"review {interaction}" in doc.text and doc.meta["target_text"] == (
          f"summary {interaction}")
    assert data.sequences.values[interaction] == target


@pytest.mark.parametrize("tok_name", ["byte", "sentencepiece"])
def test_token_spans_follow_entities(toy, sp_tokenizer, tok_name):
  data, split = toy
  tok = tokenizer_lib.ByteTokenizer() if tok_name == "byte" else sp_tokenizer
  corpus = user_corpus.UserCorpus(data, split, "profile,calrec,p5_seq_1", template_choice="all")
  for i in range(0, len(corpus), 7):
    doc = corpus[i]
    arrays = encoding.encode_document(doc, tok)
    enc = tok.encode(doc.text, add_bos=True, add_eos=True)
    np.testing.assert_array_equal(arrays["tokens"], enc.ids)
    assert arrays["entity_spans"].shape == (len(doc.spans), 2)
    for k, (span, (a, b)) in enumerate(zip(doc.spans, arrays["entity_spans"])):
      assert b > a
      np.testing.assert_array_equal(arrays["entity_ids"][a:b], k + 1)
      np.testing.assert_array_equal(arrays["entity_positions"][a:b], np.arange(1, b - a + 1))
      assert arrays["entity_kinds"][a] == document.ENTITY_KINDS[span.kind]
      lo, hi = enc.offsets[a, 0], enc.offsets[b - 1, 1]
      assert lo <= span.start and hi >= span.end  # the tokens cover the entity's characters
      covered = doc.text[lo:hi].strip()
      assert span.end - span.start >= len(covered) - 2  # ... and little else
    assert (arrays["entity_ids"] > 0).sum() == (arrays["entity_positions"] > 0).sum()
    loss = arrays["loss_mask"].astype(bool)
    if doc.target_start == 0:
      assert loss[1:].all() and not loss[0]
    else:
      first = np.argmax(loss)
      assert loss[first:].all() and not loss[:first].any()
      assert tok.decode(arrays["tokens"][first:-1]).strip() == doc.meta["target_text"]


@pytest.mark.parametrize("budget", [40, 64, 120, 400])
def test_token_budget_keeps_recent_whole_items(toy, budget):
  data, split = toy
  tok = tokenizer_lib.ByteTokenizer()
  catalogue = item_text.ItemCatalogue.build(data, item_text.ItemTextConfig.short(), tok)
  budget = budget * 4  # bytes
  corpus = user_corpus.UserCorpus(data, split, "calrec", catalogue=catalogue, tokenizer=tok,
                                  max_tokens=budget)
  free = user_corpus.UserCorpus(data, split, "calrec", catalogue=catalogue)
  shortened = 0
  for i in range(len(corpus)):
    doc, full = corpus[i], free[i]
    n_tokens = len(tok.encode(doc.text, add_bos=True, add_eos=True).ids)
    hist = [s.item for s in doc.spans if s.role == "history"]
    full_hist = [s.item for s in full.spans if s.role == "history"]
    assert hist == full_hist[len(full_hist) - len(hist):]  # the most recent items
    if hist:
      assert n_tokens <= budget
    if len(hist) < len(full_hist):
      shortened += 1
      # One more item would not have fit: the budget is used fully, from the most recent item.
      longer = corpus.render_example(i, len(hist) + 1)
      assert len(tok.encode(longer.text, add_bos=True, add_eos=True).ids) > budget
    arrays = encoding.encode_document(doc, tok)
    assert arrays["entity_spans"].shape[0] == len(doc.spans)  # whole entities only
  if budget < 400 * 4:
    assert shortened > 0


def test_item_corpus(toy):
  data, _ = toy
  corpus = user_corpus.ItemCorpus(data, templates="item")
  assert len(corpus) == data.num_items
  doc = corpus[0]
  assert doc.target_start == 0 and doc.spans[0].item == 1
  assert doc.text[doc.spans[0].start:doc.spans[0].end] == corpus.catalogue.texts[1]
  with pytest.raises(ValueError):
    user_corpus.ItemCorpus(data, templates="calrec")


def test_min_history_items_floor(toy):
  data, split = toy
  tok = tokenizer_lib.ByteTokenizer()
  for floor in (0, 1, 2):
    corpus = user_corpus.UserCorpus(data, split, "calrec", tokenizer=tok, max_tokens=40,
                                    min_history_items=floor)
    for i in range(len(corpus)):
      doc = corpus[i]
      assert doc.meta["history_items"] == min(floor, doc.meta["available_history_items"])
