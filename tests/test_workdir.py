"""recjax.workdir against real workdirs trained by `python -m recjax.main` in subprocesses.

The two session-scoped workdirs (a 10-step SASRec smoke run, a 6-step tiny lm run with its own
SentencePiece tokenizer) and their opened forms are shared with tests/test_notebook.py, which
imports these fixtures.
"""
import functools
import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from recjax import workdir
from recjax.eval import ranking as ranking_eval
from tests.cli_utils import REPO, run_main_env

SASREC_ARGS = ["--config=configs/smoke.py", "--config.train.num_steps=10",
               "--config.train.checkpoint_every_steps=5", "--config.train.progress_bar=False"]
# configs/lm.py shrunk to tests/test_lm.py's tiny model: 2 x 32 wide, 96-token rows.
LM_ARGS = ["--config=configs/lm.py", "--config.data.dataset.num_users=96",
           "--config.data.dataset.num_items=48", "--config.data.dataset.num_clusters=4",
           "--config.lm.tokenizer_vocab_size=400", "--config.text.seq_len=96",
           "--config.text.max_history_items=3", "--config.model.overrides.num_layers=2",
           "--config.model.overrides.hidden_size=32", "--config.model.overrides.head_dim=8",
           "--config.model.overrides.mlp_dim=64", "--config.model.vocab_multiple=64",
           "--config.train.batch_size=8", "--config.train.num_steps=6",
           "--config.train.log_every_steps=1", "--config.train.checkpoint_every_steps=3",
           "--config.optimizer.warmup_steps=1", "--config.eval.max_documents=16",
           "--config.eval.batch_size=8", "--config.train.progress_bar=False"]


def train(path, args):
  out = subprocess.run([sys.executable, "-m", "recjax.main", f"--workdir={path}", *args],
                       env=run_main_env(), cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return path


# Kept here, not by pytest: test_notebook.py imports the fixtures below, and pytest would run
# each imported copy of a session fixture once more (a second training run).
_ONCE: dict[str, object] = {}


def _once(key, make):
  if key not in _ONCE:
    _ONCE[key] = make()
  return _ONCE[key]


@pytest.fixture(scope="session")
def sasrec_workdir(tmp_path_factory):
  """A finished SASRec smoke run: checkpoints at steps 5 and 10, results.json at step 10."""
  return _once("sasrec_workdir", lambda: train(tmp_path_factory.mktemp("sasrec"), SASREC_ARGS))


@pytest.fixture(scope="session")
def lm_workdir(tmp_path_factory):
  """A finished tiny lm run: checkpoints at steps 3 and 6, its tokenizer.model in the workdir."""
  return _once("lm_workdir", lambda: train(tmp_path_factory.mktemp("lm"), LM_ARGS))


@pytest.fixture(scope="session")
def sasrec(sasrec_workdir):
  return _once("sasrec", lambda: workdir.open_workdir(sasrec_workdir))


@pytest.fixture(scope="session")
def lm(lm_workdir):
  return _once("lm", lambda: workdir.open_workdir(lm_workdir))


def _final(results_json, split):
  """results.json's metrics of `split`, without the timing the trainer adds."""
  return {k[len(split) + 1:]: v for k, v in results_json.items()
          if k.startswith(f"{split}/") and k != f"{split}/eval_seconds"}


@pytest.mark.parametrize("name", ["sasrec", "lm"])
def test_evaluation_reproduces_results_json(name, request):
  wd = request.getfixturevalue(name)
  assert wd.step == 10 if name == "sasrec" else wd.step == 6
  saved = wd.results()
  results = wd.evaluate()
  for split in ("valid", "test"):
    expected = _final(saved, split)
    assert set(results[split]) == set(expected)
    for key, value in expected.items():  # 8 devices here, 1 in the training run
      assert results[split][key] == pytest.approx(value, rel=1e-5), (split, key)
  table = wd.results_table(results)
  assert f"checkpoint step {wd.step}" in table
  assert f"{wd.task.name} (valid)" in table and f"{wd.task.name} (test)" in table


def test_recommendations_agree_with_the_ranking_evaluator(sasrec):
  test = sasrec.task.split.test
  users = [str(sasrec.task.data.user_ids[u]) for u in test.users]
  recs = sasrec.recommend(users, k=10)
  assert [r.user for r in recs] == users
  # The held-out item is in the top 10 exactly as often as the evaluator's recall@10 says.
  hits = np.mean([r.target in r.items for r in recs])
  assert hits == pytest.approx(sasrec.results()["test/recall@10"], abs=1e-9)
  titles = sasrec.task.data.item_text["title"]
  for r, history, target in zip(recs, test.histories, test.targets):
    assert len(r.items) == 10 and 0 not in r.items and len(set(r.items)) == 10
    assert r.titles == [str(titles[i]) for i in r.items] and all(r.titles)
    assert r.history == list(history) and r.target == int(target)
    assert r.scores == sorted(r.scores, reverse=True)
  # Excluding the history removes those items and nothing else.
  kept = sasrec.recommend(users, k=10, exclude_history=True)
  full = sasrec.item_scores([np.asarray(h) for h in test.histories])
  for r, row, history in zip(kept, full, test.histories):
    order = np.argsort(-row, kind="stable")
    assert r.items == [int(i) for i in order if i != 0 and i not in set(history)][:10]
  evaluator = ranking_eval.RankingEvaluator(
      sasrec.task.split, users_total=sasrec.task.data.num_users,
      max_len=sasrec.config.data.max_len, ks=(10,), exclude_history=True, sampled_negatives=0,
      batch_size=64, max_users=0, seed=0)
  with jax.set_mesh(sasrec.mesh):
    recall = evaluator(sasrec.model, "test", sasrec.mesh)["recall@10"]
  assert np.mean([r.target in r.items for r in kept]) == pytest.approx(recall, abs=1e-9)
  text = str(recs[0])
  assert f"user {users[0]} (test)" in text and "held-out next item" in text
  assert all(f"{rank:3d}. {title}" in text for rank, title in enumerate(recs[0].titles, 1))


def test_recommend_rejects_an_unknown_user_and_a_non_ranking_task(sasrec, lm):
  with pytest.raises(ValueError, match="user 'nobody' is not in dataset"):
    sasrec.recommend(["nobody"])
  assert not lm.ranks_items and lm.is_language_model and not sasrec.is_language_model
  with pytest.raises(ValueError, match="does not rank catalogue items"):
    lm.recommend(["u0"])
  with pytest.raises(ValueError, match="not a language model"):
    sasrec.generate(1)


def test_step_selection(sasrec_workdir, sasrec):
  assert sasrec.steps == [5, 10]
  earlier = workdir.open_workdir(sasrec_workdir, step=5)
  assert earlier.step == 5
  a = nnx.to_flat_state(nnx.state(earlier.model, nnx.Param))
  b = dict(nnx.to_flat_state(nnx.state(sasrec.model, nnx.Param)))
  assert any(not np.array_equal(v.get_value(), b[k].get_value()) for k, v in a)
  with pytest.raises(workdir.WorkdirError, match=r"no checkpoint for step 7 .* have \[5, 10\]"):
    workdir.open_workdir(sasrec_workdir, step=7)
  with pytest.raises(workdir.WorkdirError, match="sets no train.best_metric"):
    workdir.open_workdir(sasrec_workdir, step="best")


def test_best_step_comes_from_the_validated_checkpoints(sasrec_workdir, tmp_path):
  copy = tmp_path / "w"
  shutil.copytree(sasrec_workdir, copy)
  config = json.loads((copy / "config.json").read_text())
  config["train"].update(best_metric="ndcg@10", eval_every_steps=5)
  (copy / "config.json").write_text(json.dumps(config))
  (copy / "results.json").unlink()  # as while the run is still training
  with (copy / "metrics.jsonl").open("a") as f:
    f.write(json.dumps({"step": 5, "valid/ndcg@10": 0.9}) + "\n")
    f.write(json.dumps({"step": 10, "valid/ndcg@10": 0.1}) + "\n")
  assert workdir.choose_step(copy, "best", workdir.read_config(copy)) == (5, [5, 10])
  config["train"]["best_mode"] = "min"
  (copy / "config.json").write_text(json.dumps(config))
  assert workdir.choose_step(copy, "best", workdir.read_config(copy))[0] == 10


@functools.partial(jax.jit, static_argnums=0)
def _argmax_tokens(graphdef, state, tokens):
  return jnp.argmax(nnx.merge(graphdef, state)(tokens).logits, -1)


def test_generations_are_the_models_greedy_continuations(lm):
  samples = lm.generate(3, split="test")  # what the notebook asks for: one compilation
  corpus = next(c for c in lm.eval_corpora("test") if c.name == "histories")
  tokenizer = lm.task.tokenizer
  assert len(samples) == 3
  for sample in samples:
    assert sample.corpus == "histories"
    doc = next(d for d in (corpus.documents[i] for i in range(len(corpus.documents)))
               if d.text[:d.target_start] == sample.prompt)
    assert sample.answer == doc.text[doc.target_start:] and sample.answer
    prompt = list(tokenizer.encode(sample.prompt, add_bos=True).ids)
    # Teacher-forced: each generated token is the argmax after the ones before it. Padding at
    # the end (one width, one compilation) cannot change a causal model's earlier logits.
    tokens = np.zeros((1, 256), np.int32)
    tokens[0, :len(prompt) + len(sample.tokens)] = prompt + sample.tokens
    with jax.set_mesh(lm.mesh):
      greedy = np.asarray(_argmax_tokens(*nnx.split(lm.model), jnp.asarray(tokens)))[0]
    assert sample.tokens == greedy[len(prompt) - 1:len(prompt) - 1 + len(sample.tokens)].tolist()
    assert 1 <= len(sample.tokens) <= 32
    assert sample.generated == tokenizer.decode(sample.tokens, skip_special=True)
  with pytest.raises(ValueError, match="corpus 'wiki' is not among"):
    lm.generate(1, corpus="wiki")
  lines = lm.perplexities({"test": {"items/ppl": 3.0, "items/tokens": 10.0}})
  assert lines == "items (test): perplexity 3.000 over 10 tokens"


def test_a_moved_workdir_uses_its_own_tokenizer(lm_workdir, lm, tmp_path):
  copy = tmp_path / "moved"
  shutil.copytree(lm_workdir, copy)
  recorded = json.loads((copy / "config.json").read_text())["text"]["tokenizer"]
  assert recorded == str(lm_workdir / "tokenizer.model")
  moved = workdir.open_workdir(copy)
  assert moved.config.text.tokenizer == str(copy / "tokenizer.model")
  assert moved.evaluate(["test"])["test"]["items/ppl"] == pytest.approx(
      lm.results()["test/items/ppl"], rel=1e-5)


def _config_only(src, dst):
  dst.mkdir()
  shutil.copy(src / "config.json", dst / "config.json")


@pytest.mark.parametrize("case,message", [
    ("missing", "{path}: no such directory"),
    ("no_config", "{path}/config.json not found"),
    ("corrupt_config", "{path}/config.json is not valid JSON"),
    ("unknown_key", "{path}/config.json: unknown config keys"),
    ("no_checkpoints", "no finished checkpoint in {path}/checkpoints"),
    ("corrupt_checkpoint", "checkpoint {path}/checkpoints/10/state is corrupt"),
])
def test_unreadable_workdirs_name_the_path(sasrec_workdir, tmp_path, case, message):
  path = tmp_path / "w"
  if case == "no_config":
    path.mkdir()
  elif case in ("corrupt_config", "unknown_key", "no_checkpoints"):
    _config_only(sasrec_workdir, path)
    if case == "corrupt_config":
      (path / "config.json").write_text('{"task": "sasrec",')
    elif case == "unknown_key":
      config = json.loads((path / "config.json").read_text())
      config["train"]["num_stepz"] = 3
      (path / "config.json").write_text(json.dumps(config))
  elif case == "corrupt_checkpoint":
    shutil.copytree(sasrec_workdir, path)
    for file in (path / "checkpoints" / "10" / "state").rglob("*"):
      if file.is_file() and file.stat().st_size > 0:
        file.write_bytes(b"\x00garbage")
  with pytest.raises(workdir.WorkdirError) as e:
    workdir.open_workdir(path)
  assert message.format(path=path) in str(e.value)
  # IPython renders the error as one line instead of a traceback.
  assert len(e.value._render_traceback_()) == 1


def test_metrics_records_and_plot(sasrec, tmp_path):
  records = sasrec.metrics()
  steps = [r["step"] for r in records if "train/loss" in r]
  assert steps == list(range(1, 11))
  fig = workdir.plot_metrics(records)
  titles = [ax.get_title() for ax in fig.axes]
  assert titles[0] == "train/loss_window" and "valid/ndcg@10" in titles
  assert len(fig.axes[0].lines[0].get_xdata()) == 10
  with pytest.raises(ValueError, match="no metric to plot"):
    workdir.plot_metrics([{"step": 1, "time": 0.0}])
  # A live run's half-written last line is skipped; a bad line elsewhere is an error.
  (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "tr')
  assert workdir.read_metrics(tmp_path) == [{"step": 1, "train/loss": 2.0}]
  (tmp_path / "metrics.jsonl").write_text('{"step": 1\n{"step": 2, "train/loss": 2.0}\n')
  with pytest.raises(workdir.WorkdirError, match=r"metrics.jsonl, line 1: not valid JSON"):
    workdir.read_metrics(tmp_path)
