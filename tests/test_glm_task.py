"""The glm task (GLM blank-infilling pre-training) through the shared trainer, its loss against
numpy, the prefix attention of its forward pass, behaviour sampling and its bad-input rules."""
import collections
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recjax import config as config_lib
from recjax.objectives import glm as glm_loss
from recjax.tasks import build_task
from recjax.tasks import glm as glm_task
from recjax.text import behaviour
from recjax.train import trainer
from recjax.train.metrics_writer import read_jsonl
from tests.trainer_utils import apply_overrides

STEPS = 6


def tiny_config(**overrides):
  """A glm config that trains in seconds on CPU: byte tokens, 2 layers x 32."""
  config = config_lib.base_config("glm")
  config.data.dataset = dict(name="synthetic", num_users=96, num_items=48, num_clusters=4,
                             seed=0)
  config.text.templates = "calrec,profile"
  config.text.seq_len = 96
  config.text.max_history_items = 8
  config.model.overrides = dict(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=4,
                                head_dim=8, mlp_dim=64)
  config.model.vocab_multiple = 64
  config.model.dtype = "float32"
  config.train.batch_size = 8
  config.train.num_steps = STEPS
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = STEPS
  config.train.progress_bar = False
  config.train.async_checkpointing = False
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 3e-3
  config.eval.corpora = "histories,items"
  config.eval.max_documents = 24
  config.eval.batch_size = 8
  apply_overrides(config, overrides)
  config_lib.check_config(config)
  return config


def _run(config, workdir):
  return trainer.train_and_evaluate(config, build_task(config, str(workdir)), str(workdir),
                                    devices=jax.devices()[:1])


def _params(result) -> list[np.ndarray]:
  flat = nnx.to_flat_state(nnx.state(result.train_state.model(), nnx.Param))
  return [np.asarray(jax.device_get(v.get_value())) for _, v in flat]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
  return build_task(tiny_config(), str(tmp_path_factory.mktemp("task")))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """(result, workdir) of 2 * STEPS uninterrupted steps: learning, the resume's reference."""
  workdir = tmp_path_factory.mktemp("full")
  return _run(tiny_config(**{"train.num_steps": 2 * STEPS}), workdir), workdir


# --- The loss -----------------------------------------------------------------------------------


def test_infilling_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
  targets = np.array([[0, 0, 3, 6, 1], [0, 2, 2, 0, 0]], np.int32)
  mask = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], np.int32)
  targets_elsewhere = np.where(mask > 0, targets, 99)  # out-of-vocabulary where not counted
  loss, weight, metrics = glm_loss.infilling_loss(jnp.asarray(logits),
                                                  jnp.asarray(targets_elsewhere),
                                                  jnp.asarray(mask))
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  b, t = np.nonzero(mask)
  # Not shifted: logits at t score targets[t].
  np.testing.assert_allclose(float(loss), -log_p[b, t, targets[b, t]].sum(), rtol=1e-5)
  assert float(weight) == 5.0
  assert float(metrics["accuracy"]) == float(np.sum(logits[b, t].argmax(-1) == targets[b, t]))
  # Only the masked positions count: changing a logit elsewhere changes nothing.
  changed = logits.copy()
  changed[0, 0] += 50.0
  again = glm_loss.infilling_loss(jnp.asarray(changed), jnp.asarray(targets_elsewhere),
                                  jnp.asarray(mask))
  assert float(again[0]) == pytest.approx(float(loss))


# --- The forward pass ---------------------------------------------------------------------------


def _first_batch(task):
  it = iter(task.train_data(0, 1))
  return {k: np.asarray(v) for k, v in next(it).items()}


def test_the_task_reads_glm_rows_and_adds_the_intra_position_table(task):
  batch = _first_batch(task)
  assert set(batch) == set(glm_task.FEATURES)
  assert batch["tokens"].shape == (8, 96)
  assert task.model_config.num_extra_positions == 96  # = seq_len: intra-positions fit
  assert batch["intra_positions"].max() < 96
  # Part B (loss_mask) is exactly the non-prefix part of each real example.
  real = batch["segment_ids"] > 0
  np.testing.assert_array_equal(batch["loss_mask"][real] > 0, batch["prefix_mask"][real] == 0)
  assert batch["loss_mask"].sum() > 0


def test_part_a_is_bidirectional_and_never_sees_part_b(task):
  model = task.build_model(nnx.Rngs(params=0))
  batch = _first_batch(task)
  forward = lambda b: np.asarray(model(jnp.asarray(b["tokens"]), **glm_loss.model_kwargs(
      {k: jnp.asarray(v) for k, v in b.items()})).logits)
  logits = forward(batch)
  # The task's loss is the infilling loss of exactly these logits.
  loss, weight, _ = task.loss(model, {k: jnp.asarray(v) for k, v in batch.items()}, None)
  ref = glm_loss.infilling_loss(jnp.asarray(logits), batch["targets"], batch["loss_mask"])
  assert float(loss) == pytest.approx(float(ref[0]), rel=1e-5) and float(weight) == ref[1]

  row = int(np.argmax(batch["loss_mask"].sum(1)))
  seg = batch["segment_ids"][row]
  first = seg[0]
  part_a = np.flatnonzero((seg == first) & (batch["prefix_mask"][row] > 0))
  part_b = np.flatnonzero((seg == first) & (batch["prefix_mask"][row] == 0))
  assert len(part_a) > 2 and len(part_b) > 0
  # New Part-B tokens: Part A's logits do not move, Part B's do.
  other = {k: v.copy() for k, v in batch.items()}
  other["tokens"][row, part_b] = (other["tokens"][row, part_b] + 7) % 256 + 1
  changed = forward(other)
  np.testing.assert_allclose(changed[row, part_a], logits[row, part_a], atol=1e-5)
  assert np.abs(changed[row, part_b[1:]] - logits[row, part_b[1:]]).max() > 1e-3
  # A new last Part-A token: the first token's logits move (Part A attends to all of Part A).
  other = {k: v.copy() for k, v in batch.items()}
  other["tokens"][row, part_a[-2]] = (other["tokens"][row, part_a[-2]] + 7) % 256 + 1
  changed = forward(other)
  assert np.abs(changed[row, part_a[0]] - logits[row, part_a[0]]).max() > 1e-4


# --- Training through the shared trainer --------------------------------------------------------


def test_loss_decreases_and_infilling_is_evaluated_per_corpus(full_run):
  full_run, _ = full_run
  losses = full_run.losses
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3
  for split in ("valid", "test"):
    for corpus in ("histories", "items"):
      loss = full_run.metrics[f"{split}/{corpus}/infill_loss"]
      assert full_run.metrics[f"{split}/{corpus}/infill_tokens"] > 0
      assert full_run.metrics[f"{split}/{corpus}/infill_ppl"] == pytest.approx(np.exp(loss))
      assert 0.0 <= full_run.metrics[f"{split}/{corpus}/infill_accuracy"] <= 1.0
      # Trained: far below a uniform guess over the vocabulary.
      assert loss < np.log(full_run.train_state.model().cfg.vocab_size) - 0.5


def test_resume_is_bitwise_identical(full_run, tmp_path):
  full_run, _ = full_run
  first = _run(tiny_config(), tmp_path)
  second = _run(tiny_config(**{"train.num_steps": 2 * STEPS}), tmp_path)
  assert first.step == STEPS and second.step == 2 * STEPS
  assert first.losses + second.losses == full_run.losses
  for a, b in zip(_params(full_run), _params(second)):
    np.testing.assert_array_equal(a, b)
  steps = [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl") if "train/loss" in r]
  assert steps == list(range(1, 2 * STEPS + 1))


def test_init_from_a_glm_workdir_starts_from_its_parameters(full_run, tmp_path):
  result, source = full_run
  config = tiny_config(**{"init_from.path": str(source), "train.num_steps": 1,
                          "eval.corpora": "items"})
  again = _run(config, tmp_path)
  # The first step already has the trained model's loss, not a fresh one's.
  assert again.losses[0] < result.losses[0] - 0.5
  assert again.losses[0] == pytest.approx(result.losses[-1], abs=0.5)


# --- Corpus -------------------------------------------------------------------------------------


def _wide(**overrides):
  """Corpus-only: rows of 512 tokens, so histories of several items fit."""
  return tiny_config(**{"text.seq_len": 512, "text.max_history_items": 30, **overrides})


@pytest.fixture(scope="module")
def wide_task():
  return build_task(_wide(), None)


def test_documents_are_budgeted_below_seq_len(wide_task):
  budget = wide_task.document_tokens()
  assert budget == int(512 / (1 + 2 * 0.15 / 3)) == 465
  docs = [wide_task.train_corpus.corpus[i] for i in range(len(wide_task.train_corpus))]
  assert all(len(doc.encoding.ids) <= budget for doc in docs)
  assert max(len(doc.encoding.ids) for doc in docs) > 0.9 * budget  # the budget binds
  # A smaller budget shows fewer items.
  shorter = build_task(_wide(**{"glm_corpus.document_tokens": 256}), None).train_corpus
  assert all(len(shorter.corpus[i].encoding.ids) <= 256 for i in range(len(docs)))
  assert sum(shorter.corpus[i].meta["history_items"] < d.meta["history_items"]
             for i, d in enumerate(docs)) > len(docs) // 4


def test_behaviour_sampling_rates_and_windows(wide_task):
  corpus = wide_task.train_corpus
  assert isinstance(corpus, behaviour.BehaviourSampled)
  inner = corpus.corpus
  counts = collections.Counter()
  for i in range(len(corpus)):
    doc = corpus[i]
    kind = doc.meta["behaviour"]
    counts[kind] += 1
    full = inner[i].meta["history_items"]
    limit = {"long": full, "medium": 20, "short": 5}[kind]
    assert doc.meta["history_items"] == min(full, limit)
    assert doc.text == corpus[i].text  # the same document on every read
  # Rates over many documents: the kind draw alone (cheap), within binomial tolerance.
  kinds = collections.Counter(corpus.kind(i) for i in range(20000))
  for kind, rate in zip(behaviour.KINDS, (0.1, 0.3, 0.6)):
    assert abs(kinds[kind] / 20000 - rate) < 0.015
  assert counts["short"] > counts["long"]
  # The windows bind: long documents show more items than short ones.
  items = collections.defaultdict(list)
  for i in range(len(corpus)):
    items[corpus[i].meta["behaviour"]].append(corpus[i].meta["history_items"])
  assert np.mean(items["long"]) > np.mean(items["medium"]) > np.mean(items["short"])


def test_behaviour_config_rejects_bad_rates():
  with pytest.raises(ValueError, match="glm_corpus.medium_rate"):
    behaviour.BehaviourConfig(medium_rate=-1)
  with pytest.raises(ValueError, match="short_items"):
    behaviour.BehaviourConfig(short_items=30, medium_items=20)
  with pytest.raises(ValueError, match="must be > 0"):
    behaviour.BehaviourConfig(long_rate=0, medium_rate=0, short_rate=0)


# --- Bad input ----------------------------------------------------------------------------------


def test_bad_configs_fail_naming_the_key(tmp_path):
  with pytest.raises(ValueError, match="text.objective='causal_lm'"):
    build_task(tiny_config(**{"text.objective": "causal_lm"}), str(tmp_path))
  with pytest.raises(ValueError, match="num_extra_positions=16"):
    config = tiny_config()
    config.model.overrides.num_extra_positions = 16
    build_task(config, str(tmp_path))
  with pytest.raises(ValueError, match="glm_corpus.document_tokens=200"):
    build_task(tiny_config(**{"glm_corpus.document_tokens": 200}), str(tmp_path))


def test_from_a_hugging_face_checkpoint_the_first_step_is_the_checkpoints_model(tmp_path):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from recjax.models import hf_checkpoint  # pylint: disable=g-import-not-at-top
  from tests import test_lm_hf_init as hf_tests  # pylint: disable=g-import-not-at-top
  hf_dir = tmp_path / "hf"
  hf_dir.mkdir()
  # The lm task's HF fixtures: a random Llama and a byte-level BPE tokenizer.json.
  # pylint: disable=protected-access
  hf_tests._hf_checkpoint(hf_dir, vocab_size=hf_tests._tokenizer_json(hf_dir) + 20)
  # pylint: enable=protected-access
  config = tiny_config(**{"init_from.path": str(hf_dir), "train.num_steps": 1,
                          "eval.corpora": "items", "train.checkpoint_every_steps": 0})
  task = build_task(config, str(tmp_path / "run"))
  assert config.text.tokenizer == str(hf_dir / "tokenizer.json")
  assert task.model_config.hidden_size == 32 and task.model_config.num_extra_positions == 96
  result = trainer.train_and_evaluate(config, task, str(tmp_path / "run"),
                                      devices=jax.devices()[:1])
  # The checkpoint's own model (no intra-position table) on the first batch: the task's
  # table starts at zero, so the first loss is exactly that model's.
  plain = hf_checkpoint.load_hf_checkpoint(
      str(hf_dir), dataclasses.replace(task.model_config, num_extra_positions=0))
  batch = {k: jnp.asarray(v) for k, v in next(iter(task.train_data(0, 1))).items()}
  kwargs = glm_loss.model_kwargs(batch)
  kwargs["extra_positions"] = None
  loss, weight, _ = glm_loss.infilling_loss(plain(batch["tokens"], **kwargs).logits,
                                            batch["targets"], batch["loss_mask"])
  assert result.losses[0] == pytest.approx(float(loss / weight), rel=1e-4)
