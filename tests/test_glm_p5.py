"""RecSysLLM multitask fine-tuning and the P5 evaluator: held-out prompts never trained on,
candidate scoring equal to the training objective, every family's metrics (ratings, reviews
and explanations on real Amazon 2018 files), LoRA through recjax.main, bad input."""
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recjax import config as config_lib
from recjax.objectives import glm as glm_objective
from recjax.tasks import build_task
from recjax.text import encoding, infilling, pipeline
from recjax.text import templates as templates_lib
from recjax.text.document import Document, Span
from tests import datasets
from tests.cli_utils import REPO, run_main_env
from tests.trainer_utils import apply_overrides


def p5_config(**overrides):
  """configs/glm.py:p5 shrunk to seconds: byte tokens, 2 layers x 32, a few users."""
  config = config_lib.base_config("glm")
  config.data.dataset = dict(name="synthetic", num_users=96, num_items=48, num_clusters=4,
                             seed=0)
  config.text.templates = "p5"
  config.text.glm.target_as_gmask = True
  config.glm_corpus.behaviour = False
  config.text.seq_len = 160
  config.text.max_history_items = 5
  config.text.num_candidates = 4
  config.model.overrides = dict(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=4,
                                head_dim=8, mlp_dim=64)
  config.model.vocab_multiple = 64
  config.model.dtype = "float32"
  config.model.lora.rank = 4
  config.train.batch_size = 8
  config.train.num_steps = 4
  config.train.checkpoint_every_steps = 4
  config.train.progress_bar = False
  config.train.async_checkpointing = False
  config.eval.evaluators = "p5"
  config.eval.corpora = "histories"
  config.eval.batch_size = 8
  config.eval.p5.max_users = 6
  config.eval.p5.num_negatives = 9
  config.eval.p5.num_beams = 4
  config.eval.p5.ks = "1,3"
  config.eval.p5.max_new_tokens = 24
  apply_overrides(config, overrides)
  config_lib.check_config(config)
  return config


def _model(task, seed=0):
  return task.build_model(nnx.Rngs(seed))


def _mesh():
  return jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))


def test_held_out_prompts_are_never_trained_on(tmp_path):
  task = build_task(p5_config(), str(tmp_path))
  corpus = task.train_corpus
  names = {corpus[i].meta["template"] for i in range(len(corpus))}
  held_out = set(templates_lib.held_out_names())
  assert names and not names & held_out
  assert {templates_lib.BY_NAME[n].family for n in names} == {"sequential", "direct"}
  examples = task._p5_examples("test")  # pylint: disable=protected-access
  assert {e.template for e in examples if e.held_out} == {"p5_seq_heldout", "p5_direct_heldout"}
  assert {e.template for e in examples if not e.held_out} == names


@pytest.mark.parametrize("part_b_intra", ["span", "entity"])
def test_candidate_scores_are_the_training_objective(tmp_path, part_b_intra):
  # The evaluator's log p(target | prompt) is minus the infilling loss of the training example
  # of the same prompt and answer (BlankInfilling with target_as_gmask), for static positions
  # and for dynamic ones (part_b_intra="entity" training, entity trie at inference).
  config = p5_config(**{"text.glm.part_b_intra": part_b_intra})
  task = build_task(config, str(tmp_path))
  model = _model(task)
  evaluator = task.evaluators[0]
  assert evaluator.dynamic == (part_b_intra == "entity")
  examples = [e for e in task._p5_examples("test") if e.kind == "item"][:6]  # pylint: disable=protected-access
  answers = [[evaluator.answers.item_tokens[e.target_item]] for e in examples]
  got = [s[0] for s in evaluator.log_probs(model, examples, answers, True)]

  transform = infilling.BlankInfilling(task.tokenizer, task.glm, 4 * config.text.seq_len)
  forward = nnx.jit(lambda m, b: m(b["tokens"], **glm_objective.model_kwargs(b)).logits)
  for ex, score in zip(examples, got):
    doc = task.p5_corpus("test", ex.family)[ex.index]
    text = doc.text + ex.target_text
    full = Document(text, doc.spans + (Span(len(doc.text), len(text), "item", "target",
                                            ex.target_item),), target_start=len(doc.text))
    train = transform.random_map(encoding.encode_document(full, task.tokenizer),
                                 np.random.default_rng(0))
    batch = {k: jnp.asarray(train[k][None]) for k in
             ("tokens", "inter_positions", "intra_positions", "prefix_mask")}
    batch["segment_ids"] = jnp.ones_like(batch["tokens"])
    logits = forward(model, batch)
    nll, count, _ = glm_objective.infilling_loss(logits, jnp.asarray(train["targets"][None]),
                                                 jnp.asarray(train["loss_mask"][None]))
    assert int(count) == len(evaluator.answers.item_tokens[ex.target_item]) + 1
    np.testing.assert_allclose(score, -float(nll), rtol=1e-4, atol=1e-4)


def test_catalogue_search_reaches_items_longer_than_max_new_tokens(tmp_path):
  # With as many beams as items, the constrained search ends with every item in a beam, so
  # every target is placed, even though each item text is far longer than max_new_tokens.
  config = p5_config(**{"data.dataset.num_items": 16, "data.dataset.num_clusters": 2,
                        "text.num_candidates": 2, "eval.p5.num_beams": 16,
                        "eval.p5.num_negatives": 3, "eval.p5.max_new_tokens": 2})
  task = build_task(config, str(tmp_path))
  evaluator = task.evaluators[0]
  assert min(len(t) for t in evaluator.answers.item_tokens[1:]) > 2
  examples = [e for e in task._p5_examples("test") if e.family == "sequential"][:4]  # pylint: disable=protected-access
  ranks = evaluator._catalogue_ranks(_model(task), examples, _mesh())  # pylint: disable=protected-access
  assert len(ranks) == 4 and (ranks < 16).all(), ranks


def test_recsysllm_chain_pretrains_then_fine_tunes_lora_on_p5(tmp_path):
  # The README's chain, shrunk: GLM pre-training, then LoRA P5 fine-tuning from its parameters.
  tiny = ["--config.train.num_steps=3", "--config.train.checkpoint_every_steps=3",
          "--config.train.progress_bar=False", "--config.data.dataset.num_users=96",
          "--config.data.dataset.num_items=48", "--config.data.dataset.num_clusters=4",
          "--config.text.tokenizer=byte", "--config.lm.tokenizer_vocab_size=0",
          "--config.text.seq_len=160", "--config.text.max_history_items=5",
          "--config.text.num_candidates=4", "--config.model.overrides.num_layers=1",
          "--config.eval.max_documents=8"]
  p5 = ["p5:--config.eval.p5.max_users=3", "p5:--config.eval.p5.num_beams=3",
        "p5:--config.eval.p5.ks=1,3", "p5:--config.eval.p5.num_negatives=9",
        "p5:--config.eval.evaluators=p5", "p5:--config.eval.p5.max_new_tokens=16"]
  cmd = [sys.executable, "-m", "recjax.chain", "--config=configs/glm.py:synthetic",
         f"--workdir={tmp_path}", "--", *tiny, *p5]
  out = subprocess.run(cmd, cwd=REPO, env=run_main_env(), capture_output=True, text=True,
                       timeout=1200)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  stage = json.loads((tmp_path / "p5" / "config.json").read_text())
  assert stage["init_from"]["path"] == str(tmp_path / "pretrain")
  assert stage["model"]["lora"]["rank"] == 8 and stage["text"]["glm"]["target_as_gmask"]
  assert "LoRA rank 8" in out.stdout
  assert "P5 families on seen and unseen prompts" in out.stdout
  assert "p5/sequential/unseen/hr@3" in out.stdout
  results = json.loads((tmp_path / "p5" / "results.json").read_text())
  for family, templates in (("sequential", 4), ("direct", 3)):
    assert results[f"test/p5/{family}/seen/examples"] == 3 * templates
    assert results[f"test/p5/{family}/unseen/examples"] == 3
  assert 0 <= results["test/p5/sequential/seen/sampled9_hr@3"] <= 1
  assert 0 <= results["test/p5/direct/unseen/sampled4_ndcg@3"] <= 1
  assert 0 <= results["test/p5/direct/seen/accuracy"] <= 1
  assert not any("rating" in k for k in results)  # synthetic data has no ratings


@pytest.fixture(scope="module")
def gift_cards_task(tmp_path_factory):
  root = datasets.require_data_dir("amazon2018_gift_cards")
  config = p5_config(**{"data.dataset": {"name": "amazon2018_gift_cards"},
                        "data.root": str(root),
                        "text.seq_len": 384, "eval.p5.max_users": 4,
                        # the families that need ratings and reviews (the item families run
                        # on synthetic data above)
                        "eval.p5.families": "rating,explanation,review"})
  return build_task(config, str(tmp_path_factory.mktemp("gift")))


def test_rating_review_and_explanation_metrics_on_real_files(gift_cards_task):
  task = gift_cards_task
  metrics = task.evaluators[0](_model(task), "test", _mesh())
  for group in ("seen", "unseen"):
    rmse, mae = metrics[f"p5/rating/{group}/rmse"], metrics[f"p5/rating/{group}/mae"]
    assert 0 <= mae <= rmse <= 4
    assert 0 <= metrics[f"p5/explanation/{group}/bleu"] <= 100
  for key in ("bleu", "rouge1", "rouge2", "rougeL"):
    assert 0 <= metrics[f"p5/review/seen/{key}"] <= 100
  assert metrics["p5/review/unseen/rmse"] >= 0  # the held-out review prompt asks a rating
  assert metrics["p5/rating/seen/examples"] == 4 * 2
  # A random model writes garbage: ROUGE-L against real summaries is small but computed.
  assert math.isfinite(metrics["p5/review/seen/rougeL"])


def test_rating_choices_are_the_scale_of_the_data(gift_cards_task):
  values = gift_cards_task.evaluators[0].answers.rating_values
  assert values == ["1", "2", "3", "4", "5"]


def test_bad_p5_families(tmp_path):
  with pytest.raises(ValueError, match="unknown family 'ratings'"):
    task = build_task(p5_config(**{"eval.p5.families": "ratings"}), str(tmp_path))
    task._p5_examples("test")  # pylint: disable=protected-access
  task = build_task(p5_config(**{"eval.p5.families": "rating,review"}), str(tmp_path / "b"))
  with pytest.raises(ValueError, match="supports none of them"):
    task._p5_examples("test")  # pylint: disable=protected-access


def test_more_negatives_than_unseen_items_names_the_key(tmp_path):
  task = build_task(p5_config(**{"eval.p5.num_negatives": 47}), str(tmp_path))
  with pytest.raises(ValueError, match=r"num_negatives=47: user \d+ has too few unseen items"
                     r".*48 items"):
    task._p5_examples("test")  # pylint: disable=protected-access


def test_pipeline_block_has_part_b_intra():
  assert pipeline.default_config().glm.part_b_intra == "span"


def test_candidates_scored_in_length_groups_match_scoring_each_alone(tmp_path):
  # log_probs scores the candidates of several prompts grouped by length, in calls smaller
  # than one prompt's candidates (batch_size 1: 8 rows a call); every score equals that of the
  # candidate scored alone.
  task = build_task(p5_config(), str(tmp_path))
  model = _model(task)
  evaluator = task.evaluators[0]
  evaluator.batch_size = 1
  examples = [e for e in task._p5_examples("test") if e.kind == "item"][:3]  # pylint: disable=protected-access
  items = evaluator.answers.item_tokens
  answers = [[items[i] for i in range(1 + k, len(items), 2)] for k in range(len(examples))]
  assert len({len(a) for opts in answers for a in opts}) > 1 and len(answers[0]) > 8
  got = evaluator.log_probs(model, examples, answers, True)
  for ex, opts, scores in zip(examples, answers, got):
    assert scores.shape == (len(opts),)
    for j in (0, len(opts) // 2, len(opts) - 1):
      alone = evaluator.log_probs(model, [ex], [[opts[j]]], True)[0]
      np.testing.assert_allclose(scores[j], alone[0], rtol=1e-4, atol=1e-4)
