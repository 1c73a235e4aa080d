"""Multi-domain mixtures: rates, domain tags, per-domain catalogues."""
import collections

import numpy as np
import pytest

from recjax.text import tokenizer as tokenizer_lib
from recjax.data.splits import leave_one_out
from recjax.data.synthetic import make_synthetic
from recjax.text import item_text, mixture, pipeline, user_corpus
from tests.datasets import require_data_dir


def _domain(name, seed, rate, num_items):
  data = make_synthetic(num_users=40 + 20 * seed, num_items=num_items, num_clusters=5,
                        seed=seed, max_length=10, name=name)
  split = leave_one_out(data)
  catalogue = item_text.ItemCatalogue.build(data)
  corpus = user_corpus.UserCorpus(data, split, "calrec", catalogue=catalogue, domain=name)
  return mixture.Domain(name, corpus, rate, data, split, catalogue)


@pytest.fixture(scope="module")
def domains():
  return [_domain("shop_a", 1, 3.0, 100), _domain("shop_b", 2, 1.0, 300)]


def test_rates_tags_and_determinism(domains):
  mix = mixture.Mixture(domains, length=400, seed=0)
  assert len(mix) == 400 and mix.counts.tolist() == [300, 100]
  counts = collections.Counter()
  for i in range(len(mix)):
    doc = mix[i]
    d = doc.meta["domain_id"]
    counts[d] += 1
    assert doc.meta["domain"] == domains[d].name
    assert f"on {domains[d].name}, oldest first" in doc.text
    target = doc.meta["target_item"]
    assert doc.meta["target_text"] == domains[d].catalogue.texts[target]
  assert counts == {0: 300, 1: 100}
  # Domain a (60 documents) is cycled through 5 times, each cycle without repeats.
  a_docs = [mix._index[i] for i in range(400) if mix.domain_of(i) == 0]
  slots = np.flatnonzero(mix._domain == 0)
  cycle = [int(mix._index[s]) for s in slots[:len(domains[0].corpus)]]
  assert sorted(cycle) == list(range(len(domains[0].corpus)))
  assert len(a_docs) == 300
  again = mixture.Mixture(domains, length=400, seed=0)
  assert [again[i].text for i in range(50)] == [mix[i].text for i in range(50)]
  other = mixture.Mixture(domains, length=400, seed=1)
  assert [other[i].text for i in range(50)] != [mix[i].text for i in range(50)]
  assert "shop_a: rate 0.750" in mix.describe()


def test_default_length_and_validation(domains):
  mix = mixture.Mixture(domains)
  assert len(mix) == sum(len(d.corpus) for d in domains)
  with pytest.raises(ValueError, match="unique"):
    mixture.Mixture([domains[0], domains[0]])
  with pytest.raises(ValueError, match="rates"):
    mixture.Mixture([mixture.Domain("x", domains[0].corpus, -1.0)])


def test_domain_ids_reach_batches(domains):
  mix = mixture.Mixture(domains, length=200, seed=0)
  tok = tokenizer_lib.ByteTokenizer()
  config = pipeline.PipelineConfig(seq_len=1024, batch_size=4, drop_remainder=False)
  seen = collections.Counter()
  for batch in pipeline.make_text_dataset(mix, tok, config):
    for r in range(batch["tokens"].shape[0]):
      for s in set(np.unique(batch["segment_ids"][r])) - {0}:
        ids = np.unique(batch["domain_ids"][r][batch["segment_ids"][r] == s])
        assert len(ids) == 1
        seen[int(ids[0])] += 1
  assert seen == {0: 150, 1: 50}


def test_eval_corpus_uses_own_catalogue(domains):
  mix = mixture.Mixture(domains)
  for domain in mix.domains:
    test = domain.eval_corpus("test")
    assert test.catalogue is domain.catalogue and len(test) == len(domain.split.test)
    doc = test[0]
    assert doc.meta["target_item"] == domain.split.test.targets[0]
    assert doc.meta["domain"] == domain.name


def test_real_amazon_mixture():
  root = require_data_dir("amazon_office", "amazon_scientific", "amazon_games6k")
  specs = [{"dataset": {"name": "amazon_office"}, "rate": 0.5},
           {"dataset": {"name": "amazon_scientific"}, "rate": 0.3},
           {"dataset": {"name": "amazon_games6k"}, "rate": 0.2, "tag": "Video Games"}]
  mix = mixture.build_mixture(specs, str(root), length=1000, max_history_items=10)
  assert [d.name for d in mix.domains] == ["Amazon Office Products",
                                           "Amazon Industrial and Scientific", "Video Games"]
  assert mix.counts.tolist() == [500, 300, 200]
  assert [d.catalogue.num_items for d in mix.domains] == [2420, 4344, 16859]
  for i in range(0, 1000, 37):
    doc = mix[i]
    domain = mix.domains[doc.meta["domain_id"]]
    assert domain.name in doc.text
    items = [s.item for s in doc.spans if s.kind == "item"]
    assert all(doc.text[s.start:s.end] == domain.catalogue.texts[s.item]
               for s in doc.spans if s.kind == "item") and items


def test_mixture_split_uses_temporal_fractions():
  from recjax.data import registry, splits  # pylint: disable=g-import-not-at-top
  specs = [{"dataset": {"name": "synthetic", "num_users": 120, "num_items": 90,
                        "num_clusters": 4, "seed": s}, "tag": f"shop_{s}"} for s in (1, 2)]
  mix = mixture.build_mixture(specs, None, split="temporal",
                              split_kwargs={"valid_fraction": 0.2, "test_fraction": 0.1})
  for spec, domain in zip(specs, mix.domains):
    data = registry.load_dataset(spec["dataset"])
    want = splits.temporal(data, valid_fraction=0.2, test_fraction=0.1)
    np.testing.assert_array_equal(domain.split.train.lengths, want.train.lengths)
    assert abs(domain.split.train.lengths.sum() / data.num_interactions - 0.7) < 0.01
