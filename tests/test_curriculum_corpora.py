"""The curriculum's corpora: entity spans, no leaks, determinism, shards, held-out corpora, lm."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from recjax import config as config_lib
from recjax.curriculum import cooccurrence
from recjax.curriculum import corpora as C
from recjax.curriculum import walk_split
from recjax.curriculum import walks as walks_lib
from recjax.data import registry
from recjax.data.canonical import InteractionData, Sequences
from recjax.data.splits import make_split
from recjax.text import pipeline
from recjax.text.item_text import ItemCatalogue
from recjax.text.user_corpus import UserCorpus
from tests.cli_utils import REPO, run_main_env
from tests.datasets import require_data_dir


def _config(**rates):
  config = config_lib.base_config("lm")
  config.data.dataset = dict(name="synthetic", num_users=120, num_items=60, num_clusters=4,
                             seed=0)
  config.text.templates = "calrec,profile"
  config.curriculum.walks.walks_per_node = 3
  for name, rate in rates.items():
    config.curriculum.rates[name] = rate
  config_lib.check_config(config)
  return config


@pytest.fixture(scope="module")
def synthetic():
  config = _config(item_text=1.0, rules=1.0, walks=1.0, histories=1.0)
  return config, pipeline.build_corpus(config, "train", None)


def _hand_made():
  """Items 9, 10, 11 occur only as validation/test targets; 6-8 and 12 never occur."""
  seqs = [[1, 2, 3, 1, 2, 9, 10], [2, 3, 4, 2, 3, 4, 1], [3, 4, 5, 11, 5], [1, 2]]
  n = 12
  titles = np.array([""] + [f"title {i}" for i in range(1, n + 1)], dtype=object).astype(str)
  brands = np.array([""] + [f"brand {i % 3}" if i % 2 else "" for i in range(1, n + 1)],
                    dtype=object).astype(str)
  data = InteractionData(name="hand", sequences=Sequences.from_lists(seqs),
                         user_ids=np.array([f"u{i}" for i in range(len(seqs))]),
                         item_ids=np.array(["<pad>"] + [f"i{i}" for i in range(1, n + 1)]),
                         item_text={"title": titles, "brand": brands})
  split = make_split(data, "leave_one_out")
  base = UserCorpus(data, split, templates="profile", catalogue=ItemCatalogue.build(data))
  config = config_lib.base_config("lm")
  config.curriculum.rules.min_count = 1
  config.curriculum.rules.min_lift = 0.0
  config.curriculum.item_text.heldout_fraction = 0.25
  return config, base


def _check_spans(doc, catalogue, ids=None):
  assert doc.spans
  for s in doc.spans:
    assert s.kind == "item" and 1 <= s.item <= catalogue.num_items
    want = (ids or catalogue.texts)[s.item]
    assert doc.text[s.start:s.end] == want


def test_every_item_mention_is_an_entity_span_at_its_characters(synthetic):
  config, base = synthetic
  catalogue = base.catalogue
  for name in ("item_text", "rules", "walks"):
    corpus = C.modality_corpus(config, name, base)
    for i in range(0, len(corpus), max(1, len(corpus) // 25)):
      doc = corpus[i]
      _check_spans(doc, catalogue)
      expected = {"item_text": 1, "rules": 2,
                  "walks": config.curriculum.walks.walk_length}[name]
      assert len(doc.spans) == expected, (name, doc.marked())
  rule = C.modality_corpus(config, "rules", base)[0]
  assert [s.role for s in rule.spans] == ["history", "target"]
  assert "with probability" in rule.text and "lift" in rule.text
  for corpus in C.heldout_corpora(config, base, None, "test"):
    doc = corpus.documents[0]
    _check_spans(doc, catalogue)
    if corpus.has_answer:  # the answer starts at the last item mention
      assert doc.target_start == doc.spans[-1].start
      assert doc.meta["target_item"] == doc.spans[-1].item


def test_alignment_ids_follow_the_id_knob():
  config, base = _hand_made()
  config.curriculum.item_text.id = "raw_id"
  doc = C.modality_corpus(config, "item_text", base)[0]
  item = doc.spans[0].item
  assert doc.text.startswith(f"This item item i{item} is described as title {item}")
  assert doc.text[doc.spans[0].start:doc.spans[0].end] == f"item i{item}"
  config.curriculum.item_text.id = "semantic_id"
  with pytest.raises(ValueError, match="semantic_ids"):
    C.modality_corpus(config, "item_text", base)


def test_rules_and_walks_use_training_prefixes_only():
  config, base = _hand_made()
  held_out = {9, 10, 11}  # validation / test targets only
  for name in ("rules", "walks"):
    corpus = C.modality_corpus(config, name, base)
    assert len(corpus) > 0
    items = {s.item for i in range(len(corpus)) for s in corpus[i].spans}
    assert not items & held_out, name
    texts = " ".join(corpus[i].text for i in range(len(corpus)))
    assert "title 9" not in texts and "title 10" not in texts and "title 11" not in texts
  # Were the held-out targets used, the rule 2 -> 9 (user 0) would exist.
  rules = C.modality_corpus(config, "rules", base).rules
  assert (2, 9) not in rules.pairs() and (1, 2) in rules.pairs()


def test_rules_on_a_built_split_occur_in_its_training_sequences(synthetic):
  config, base = synthetic
  split = base.split
  window = config.curriculum.rules.window
  near = set()
  for seq in split.train:
    for d in range(1, window + 1):
      near.update(zip(seq[:-d].tolist(), seq[d:].tolist()))
  rules = C.modality_corpus(config, "rules", base).rules
  assert len(rules) > 20 and rules.pairs() <= near
  # Validation targets enter no training statistic: count(a) is over training sequences.
  counts = cooccurrence.pair_counts(split.train, split.num_items, window)[3]
  a = rules.antecedent
  assert np.allclose(rules.confidence, rules.count / counts[a])


def test_corpora_are_deterministic_per_seed(synthetic):
  config, base = synthetic
  one = C.build_curriculum(config, None, base)
  two = C.build_curriculum(config, None, base)
  assert [one[i].text for i in range(0, len(one), 7)] == [two[i].text for i in
                                                            range(0, len(two), 7)]
  walks = C.modality_corpus(config, "walks", base)
  config.curriculum.walks.seed = 1
  other = C.modality_corpus(config, "walks", base)
  config.curriculum.walks.seed = 0
  assert [walks[i].text for i in range(30)] != [other[i].text for i in range(30)]


def test_walk_shards_partition_the_unsharded_walks(synthetic):
  config, base = synthetic
  full = C.modality_corpus(config, "walks", base)
  key = lambda c, i: (c[i].meta["start"], c[i].meta["repeat"], c[i].text)
  whole = sorted(key(full, i) for i in range(len(full)))
  parts = [C.modality_corpus(config, "walks", base, shard=s, num_shards=3) for s in range(3)]
  assert sum(len(p) for p in parts) == len(full)
  assert sorted(key(p, i) for p in parts for i in range(len(p))) == whole
  starts = [{p[i].meta["start"] for i in range(len(p))} for p in parts]
  assert not (starts[0] & starts[1]) and not (starts[1] & starts[2])
  # The whole mixture: each process holds its own documents of every modality.
  mixes = [C.build_curriculum(config, None, base, s, 2) for s in range(2)]
  hist = [{mix.domains[3].corpus[i].meta["user"] for i in range(len(mix.domains[3].corpus))}
          for mix in mixes]
  assert not hist[0] & hist[1] and len(hist[0] | hist[1]) == len(base)


def test_heldout_pair_groups_on_a_hand_made_split():
  config, base = _hand_made()
  got = {}
  for split in ("valid", "test"):
    for corpus in C.heldout_corpora(config, base, None, split):
      if corpus.name.startswith("curriculum/pairs_"):
        docs = corpus.documents
        got[split, corpus.name[len("curriculum/pairs_"):]] = sorted(
            (docs[i].meta["a"], docs[i].meta["b"]) for i in range(len(docs)))
  assert got == {("valid", "both_seen"): [(3, 4)], ("valid", "one_unseen"): [(2, 9), (5, 11)],
                 ("test", "both_seen"): [(4, 1)], ("test", "one_unseen"): [(11, 5)],
                 ("test", "both_unseen"): [(9, 10)]}  # valid has no both-unseen pair: left out
  doc = C.PairCorpus(np.array([9]), np.array([10]), base.catalogue)[0]
  assert doc.text == "Users who interact with title 9; Brand: brand 0 then interact with title 10."
  assert doc.text[doc.target_start:] == "title 10."


def test_heldout_histories_items_and_full_graph():
  config, base = _hand_made()
  corpora = {c.name: c for c in C.heldout_corpora(config, base, None, "test")}
  users = corpora["curriculum/histories_heldout_users"].documents
  assert len(users) == 3  # users with a test target
  first = [s.item for s in users[0].spans]
  assert first == [1, 2, 3, 1, 2, 9, 10]  # the history, then the held-out target
  items = corpora["curriculum/item_text"].documents
  held = C.heldout_items(12, 0.25, 0).tolist()
  assert sorted(items[i].meta["item"] for i in range(len(items))) == held and len(held) == 3
  train_items = C.modality_corpus(config, "item_text", base)
  assert not {train_items[i].meta["item"] for i in range(len(train_items))} & set(held)
  # The full graph has every interaction, so its walks reach the held-out targets.
  full = corpora["curriculum/histories_full_graph"].documents
  assert {s.item for i in range(len(full)) for s in full[i].spans} & {9, 10, 11}


def test_isolated_items_rule():
  config, base = _hand_made()
  walks = C.modality_corpus(config, "walks", base)
  starts = {walks[i].meta["start"] for i in range(len(walks))}
  assert starts == {1, 2, 3, 4, 5}  # 6-12 have no training neighbour: they start no walk
  assert walks.walks.isolated == 7
  config.curriculum.walks.isolated = "error"
  with pytest.raises(ValueError, match=r"7 of 12 items have no neighbour"):
    C.modality_corpus(config, "walks", base)
  lonely = Sequences.from_lists([[1], [2, 2]])
  graph = walks_lib.cooccurrence_graph(lonely, 3)
  config.curriculum.walks.isolated = "skip"
  with pytest.raises(ValueError, match="no edge"):
    C.walk_corpus(graph, base.catalogue, config.curriculum.walks)


def test_bad_curriculum_configs_are_named(synthetic):
  config, base = synthetic
  config = _config(general=1.0)
  with pytest.raises(ValueError, match="general_file"):
    C.build_curriculum(config, None, base)
  with pytest.raises(ValueError, match="all 0"):
    C.build_curriculum(_config(), None, base)
  config = _config(walks=1.0)
  config.curriculum.walks.templates = "p5_direct_2"  # needs candidates
  with pytest.raises(ValueError, match="history templates may use only"):
    C.build_curriculum(config, None, base)


def test_general_reviews_are_the_distinct_review_texts_of_other_datasets(tmp_path):
  root = require_data_dir("amazon2018_gift_cards")
  require_data_dir("amazon2018_all_beauty")
  names = ["amazon2018_gift_cards", "amazon2018_all_beauty"]
  data = [registry.load_dataset(n, str(root)) for n in names]
  config = config_lib.base_config("lm")
  config.data.dataset = dict(name="amazon_office")
  config.data.root = str(root)
  config.curriculum.general_reviews = ",".join(names)
  corpus = C.modality_corpus(config, "general", None)
  docs = [corpus[i] for i in range(len(corpus))]
  texts = [d.text for d in docs]
  assert len(set(texts)) == len(texts) and all(t and not d.spans for t, d in zip(texts, docs))
  expected = []  # "<summary>. <review>", each distinct text once, in file order
  for d in data:
    for summary, review in zip(d.reviews["summary"], d.reviews["review"]):
      summary, review = str(summary).strip(), str(review).strip()
      text = (f"{summary}{'' if summary[-1] in '.!?' else '.'} {review}" if summary and review
              else summary or review)
      if text and text not in expected:
        expected.append(text)
  assert texts == expected
  assert texts[0] == "Five Stars. Best way to say Happy Valentines"
  assert sum(len(d.reviews["review"]) for d in data) > len(texts) > 3000
  # The curriculum's own dataset is refused (its reviews describe its held-out items).
  config.data.dataset = dict(name="amazon2018_gift_cards")
  with pytest.raises(ValueError, match="'amazon2018_gift_cards', the curriculum's own dataset"):
    C.modality_corpus(config, "general", None)
  config.data.dataset = dict(name="amazon_office")
  config.curriculum.general_file = str(tmp_path / "general.txt")
  with pytest.raises(ValueError, match="not both"):
    C.modality_corpus(config, "general", None)
  config.curriculum.general_file, config.curriculum.general_reviews = "", "amazon_scientific"
  with pytest.raises(ValueError, match="'amazon_scientific' has no review text"):
    C.modality_corpus(config, "general", None)


def test_walk_split_trains_sasrec_on_walks_and_keeps_the_real_evaluation(synthetic):
  _, base = synthetic
  split = base.split
  walks = walk_split.walks_for_split(split, walk_length=8, walks_per_node=2, seed=0)
  only = walk_split.walk_split(split, walks, "walks")
  both = walk_split.walk_split(split, walks, "both")
  assert walk_split.walk_split(split, walks, "real") is split
  assert np.array_equal(only.train.values, walks.items.reshape(-1))
  assert len(both.train) == len(split.train) + len(walks)
  assert np.array_equal(both.train[len(split.train) + 3], walks.items[3])
  assert np.array_equal(both.train[5], split.train[5])
  for s in (only, both):
    assert s.test is split.test and s.valid is split.valid
  from recjax.tasks.sasrec import SASRecTask  # pylint: disable=g-import-not-at-top
  config = config_lib.base_config("sasrec")
  config.train.batch_size = 16
  task = SASRecTask(config, base.data, only)
  batch = next(iter(task.train_data(0, 1)))
  assert set(np.unique(batch["inputs"])) - {0} <= set(walks.items.reshape(-1).tolist())


def test_tokenizer_texts_include_every_modality(synthetic):
  config, _ = synthetic
  config.lm.tokenizer_max_documents = 200
  texts = C.tokenizer_texts(config, 200)
  assert any(t.startswith("Users who interact with") for t in texts)
  assert any(t.startswith("This item") for t in texts)
  assert any(t.startswith("A user bought") for t in texts)


def test_amazon_games6k_curriculum_builds():
  root = require_data_dir("amazon_games6k")
  data = registry.load_dataset({"name": "amazon_games6k"}, str(root))
  config = config_lib.base_config("lm")
  config.data.dataset = dict(name="amazon_games6k")
  config.data.root = str(root)
  for name in ("item_text", "rules", "walks", "histories"):
    config.curriculum.rates[name] = 1.0
  start = time.perf_counter()
  mix = C.build_curriculum(config, None)
  assert time.perf_counter() - start < 60
  sizes = {d.name: len(d.corpus) for d in mix.domains}
  assert sizes["walks"] > 10 * 1000 and sizes["rules"] > 1000
  assert sizes["item_text"] == pytest.approx(0.95 * data.num_items, abs=0.01 * data.num_items)
  heldout = {c.name: len(c.documents) for c in
             C.heldout_corpora(config, mix.domains[3].corpus, None, "test")}
  assert heldout["curriculum/pairs_both_seen"] > 0 and "curriculum/pairs_one_unseen" in heldout


def test_lm_task_through_main_reports_every_curriculum_corpus(tmp_path):
  general = tmp_path / "general.txt"
  general.write_text("The quick brown fox jumps over the lazy dog.\nA second line of text.\n")
  args = [f"--config.curriculum.general_file={general}", "--config.curriculum.rates.general=0.5",
          "--config.data.dataset.num_users=96", "--config.data.dataset.num_items=48",
          "--config.data.dataset.num_clusters=4", "--config.lm.tokenizer_vocab_size=0",
          "--config.text.seq_len=96", "--config.text.max_history_items=3",
          "--config.model.overrides.num_layers=1", "--config.model.overrides.hidden_size=32",
          "--config.model.overrides.mlp_dim=64", "--config.model.overrides.head_dim=8",
          "--config.model.vocab_multiple=64", "--config.train.num_steps=2",
          "--config.train.batch_size=8", "--config.train.log_every_steps=1",
          "--config.train.checkpoint_every_steps=0", "--config.train.progress_bar=False",
          "--config.eval.max_documents=8", "--config.eval.batch_size=8",
          "--config.curriculum.walks.walks_per_node=2", "--config.curriculum.walks.walk_length=6"]
  out = subprocess.run([sys.executable, "-m", "recjax.main", "--config=configs/curriculum.py",
                        f"--workdir={tmp_path / 'w'}", *args], env=run_main_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "mixture of 5 domains" in out.stdout and "general: rate" in out.stdout
  results = json.loads((tmp_path / "w" / "results.json").read_text())
  metrics = results.get("metrics", results)
  names = ["curriculum/item_text", "curriculum/pairs_both_seen",
           "curriculum/histories_heldout_users", "curriculum/histories_full_graph"]
  for name in names:
    for split in ("valid", "test"):
      assert metrics[f"{split}/{name}/ppl"] > 1.0, name
    assert f"{name}/ppl" in out.stdout
  assert metrics["test/curriculum/pairs_both_seen/target_ppl"] > 1.0
  assert "histories/ppl" in out.stdout  # the other corpora of eval.corpora stay
