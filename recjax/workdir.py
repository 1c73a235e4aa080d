"""A finished or running experiment read back from its workdir: config, task, model, logs.

    from recjax import workdir
    wd = workdir.open_workdir("/tmp/recjax_quickstart")  # or gs://bucket/run; step="best" or N
    results = wd.evaluate()                              # {split: metrics}, every evaluator
    print(wd.results_table(results))                     # the table recjax.main prints
    workdir.plot_metrics(wd.metrics())                   # training curves from metrics.jsonl
    for rec in wd.recommend(wd.example_users(3)):        # ranking tasks (SASRec): top 10
      print(rec)
    for sample in wd.generate(3):                        # language-model tasks: prompt -> text
      print(sample)

`python -m recjax.evaluate` and docs/notebooks/evaluate_checkpoint.ipynb stand on it. Nothing in
the workdir is written: a run that is still training keeps its checkpoints. Only the model's
variables are read from the checkpoint (not the optimizer state). Paths go through
`etils.epath`, as Orbax's do, so a `gs://` workdir reads the same as a local one. A workdir that
cannot be read raises `WorkdirError` naming the file and what is wrong.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import tempfile
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from recjax import config as config_lib
from recjax.tasks import build_task
from recjax.train import checkpoint as ckpt_lib
from recjax.train import metrics_writer
from recjax.train import sharding as shard_lib

if TYPE_CHECKING:
  from matplotlib.figure import Figure

  from recjax.train.trainer import Task

SPLITS = ("valid", "test")


class WorkdirError(ValueError):
  """A workdir that cannot be opened: the message names the path and what is wrong."""

  def _render_traceback_(self) -> list[str]:
    # IPython shows this instead of a traceback: in a notebook the error is one line.
    return [f"{type(self).__name__}: {self}"]


def read_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to `path`/config.json, checked against the schema."""
  root = epath.Path(path)
  if not root.is_dir():
    raise WorkdirError(f"{root}: no such directory (a workdir is the --workdir of "
                       "`python -m recjax.main`)")
  config_path = root / "config.json"
  if not config_path.exists():
    raise WorkdirError(f"{config_path} not found: {root} is not a directory written by "
                       "`python -m recjax.main`")
  try:
    raw = json.loads(config_path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise WorkdirError(f"{config_path} is not valid JSON ({e})") from e
  if not isinstance(raw, dict) or "task" not in raw:
    raise WorkdirError(f"{config_path} is not a recjax config (no 'task' key)")
  config = ml_collections.ConfigDict(raw)
  try:
    config_lib.check_config(config)
  except ValueError as e:
    raise WorkdirError(f"{config_path}: {e}") from e
  return config


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of `path`/metrics.jsonl ({"step", "time", metric: value}); [] if absent."""
  file = epath.Path(path) / "metrics.jsonl"
  if not file.exists():
    return []
  lines = file.read_text().splitlines()
  records = []
  for number, line in enumerate(lines, 1):
    if line.strip():
      try:
        records.append(json.loads(line))
      except ValueError as e:
        if number == len(lines):  # the last line of a live run may be half written
          break
        raise WorkdirError(f"{file}, line {number}: not valid JSON ({e})") from e
  return records


def choose_step(path: str | os.PathLike, step: int | str | None,
                config: ml_collections.ConfigDict) -> tuple[int, list[int]]:
  """(the checkpoint step `step` names, every finished step) in `path`/checkpoints.

  `step`: None or "latest"; "best" (the step `train.best_metric` ranks first: results.json's
  `best_step`, else the best validated checkpoint in metrics.jsonl); or a step number.
  """
  ckpt_dir = epath.Path(path) / "checkpoints"
  steps = ckpt_lib.finished_steps(str(ckpt_dir)) if ckpt_dir.is_dir() else []
  if not steps:
    raise WorkdirError(f"no finished checkpoint in {ckpt_dir}")
  if step is None or step == "latest":
    return steps[-1], steps
  if step == "best":
    return _best_step(epath.Path(path), config, steps), steps
  if isinstance(step, str) and not step.isdigit():
    raise WorkdirError(f"step={step!r}: use 'latest', 'best' or a step number")
  if int(step) not in steps:
    raise WorkdirError(f"no checkpoint for step {int(step)} in {ckpt_dir}; have {steps}")
  return int(step), steps


def _best_step(root: epath.Path, config: ml_collections.ConfigDict, steps: list[int]) -> int:
  metric = str(config.train.get("best_metric", "") or "")
  if not metric:
    raise WorkdirError(f"step='best': {root / 'config.json'} sets no train.best_metric; use "
                       "'latest' or a step number")
  results = root / "results.json"
  if results.exists():
    best = json.loads(results.read_text()).get("best_step")
    if best is not None and int(best) in steps:
      return int(best)
  # A run still training: rank its validated checkpoints as the trainer's manager does.
  scores = {int(r["step"]): float(r[f"valid/{metric}"]) for r in read_metrics(root)
            if f"valid/{metric}" in r and int(r["step"]) in steps}
  if not scores:
    raise WorkdirError(f"step='best': no checkpoint in {root / 'checkpoints'} has a "
                       f"valid/{metric} in {root / 'metrics.jsonl'}")
  pick = max if str(config.train.best_mode) == "max" else min
  return pick(scores, key=scores.get)


def restore_model(config: ml_collections.ConfigDict, task: Task, ckpt_dir: str, step: int,
                  mesh: jax.sharding.Mesh) -> nnx.Module:
  """The model of the checkpoint at `step`, its variables on the config's shardings over
  `mesh` (only the model is read, not the optimizer state)."""
  graphdef, abstract = nnx.split(nnx.eval_shape(
      lambda: task.build_model(nnx.Rngs(params=config.seed))))
  shardings = shard_lib.state_shardings(abstract, mesh, config.sharding.logical_axis_rules)
  flat = nnx.to_flat_state(abstract)
  flat_shardings = dict(nnx.to_flat_state(shardings))
  targets = {}
  for path, var in flat:
    value = var.get_value()
    targets[tuple(map(str, path))] = jax.ShapeDtypeStruct(
        value.shape, value.dtype, sharding=flat_shardings[path].get_value())
  restored = ckpt_lib.restore_model_arrays(ckpt_dir, step, targets)
  state = nnx.from_flat_state([(path, var.replace(restored[tuple(map(str, path))]))
                               for path, var in flat])
  return nnx.merge(graphdef, state)


@dataclasses.dataclass
class Recommendation:
  """The top-k items for one user after their history on a split (`Workdir.recommend`)."""

  user: str                 # raw user id, as in the dataset files
  split: str
  history: list[int]        # internal item ids, oldest first (what the model may see)
  items: list[int]          # the k recommended ids, best first
  titles: list[str]         # their titles
  scores: list[float]
  target: int | None        # the held-out next item of `split` (None: the user has none)
  target_title: str
  history_titles: list[str]
  excluded_history: bool    # whether the user's history items were removed from the ranking

  def __str__(self) -> str:
    shown = self.history_titles[-10:]
    lines = [f"user {self.user} ({self.split}): {len(self.history)} items in the history"
             + (", the last 10:" if len(self.history) > 10 else ":")]
    lines += [f"    {t}" for t in shown]
    if self.target is not None:
      rank = self.items.index(self.target) + 1 if self.target in self.items else None
      where = f"rank {rank}" if rank else f"not in the top {len(self.items)}"
      lines.append(f"  held-out next item: {self.target_title} ({where})")
    lines.append(f"  top {len(self.items)}" + (" (history items excluded):"
                                                 if self.excluded_history else ":"))
    for rank, (item, title, score) in enumerate(zip(self.items, self.titles, self.scores), 1):
      mark = "  <- held out" if item == self.target else ""
      lines.append(f"  {rank:3d}. {title}  [item {item}, score {score:.3f}]{mark}")
    return "\n".join(lines)


@dataclasses.dataclass
class Generation:
  """A prompt of an evaluation corpus, the model's continuation and the document's answer."""

  corpus: str
  prompt: str
  generated: str
  answer: str
  tokens: list[int]  # the generated token ids (the end-of-document token included)

  def __str__(self) -> str:
    prompt = self.prompt if len(self.prompt) <= 400 else "..." + self.prompt[-397:]
    return (f"[{self.corpus}] {prompt}\n  generated: {self.generated!r}\n"
            f"  answer:    {self.answer!r}")


@dataclasses.dataclass
class Workdir:
  """An opened workdir: its config, the task rebuilt from it and one checkpoint's model."""

  path: str
  config: ml_collections.ConfigDict
  task: Task
  step: int                 # the restored checkpoint
  steps: list[int]          # every finished checkpoint
  mesh: jax.sharding.Mesh
  model: nnx.Module

  def __str__(self) -> str:
    return (f"{self.path}: task {self.config.task!r} ({self.task.name}), checkpoint step "
            f"{self.step} (finished checkpoints: {self.steps}), mesh "
            f"{dict(self.mesh.shape)}")

  def evaluate(self, splits: Sequence[str] = SPLITS) -> dict[str, dict[str, float]]:
    """{split: metrics} of every evaluator of the task, as `recjax.main` reports them."""
    from recjax.train import trainer  # pylint: disable=g-import-not-at-top
    with jax.set_mesh(self.mesh):
      return {split: trainer.evaluate(self.task, self.model, split, self.mesh)
              for split in splits}

  def results_table(self, results: Mapping[str, Mapping[str, float]]) -> str:
    """The table `recjax.main` prints: one row per split for the model, then the baselines."""
    lines = [f"checkpoint step {self.step}, {self.task.results_heading}:"]
    lines += [line for split, metrics in results.items()
              if (line := metrics_writer.users_line(metrics, split))]
    return "\n".join(lines + [metrics_writer.results_table(self.task, results)])

  def results(self) -> dict[str, float]:
    """results.json of the finished run ({} while it is still training)."""
    file = epath.Path(self.path) / "results.json"
    return json.loads(file.read_text()) if file.exists() else {}

  def metrics(self) -> list[dict[str, Any]]:
    """The records of metrics.jsonl (training and validation metrics by step)."""
    return read_metrics(self.path)

  # --- Ranking tasks (SASRec) -----------------------------------------------------------------

  @property
  def ranks_items(self) -> bool:
    """Whether the model scores catalogue items after a history (`recommend` works)."""
    return hasattr(self.task, "split") and hasattr(self.model, "item_table")

  def example_users(self, n: int = 3, split: str = "test") -> list[str]:
    """The raw ids of `n` users evaluated on `split`, evenly spread over them."""
    eval_set = self._ranking_split(split)
    pick = np.linspace(0, len(eval_set) - 1, min(n, len(eval_set))).astype(np.int64)
    return [str(self.task.data.user_ids[eval_set.users[i]]) for i in pick]

  def recommend(self, users: Sequence[str | int], k: int = 10, split: str = "test",
                exclude_history: bool | None = None) -> list[Recommendation]:
    """The model's top `k` items for each of `users` (raw user ids) after their `split` history.

    The history is what the ranking evaluator gives the model on `split` (for test: everything
    but the last item); a user `split` does not evaluate gets their whole training sequence and
    no target. `exclude_history` (default `config.eval.exclude_history`) removes every item of
    the user's history from the ranking, as the evaluator does; item 0 (padding) never appears.
    """
    eval_set = self._ranking_split(split)
    data, train = self.task.data, self.task.split.train
    exclude = bool(self.config.eval.exclude_history if exclude_history is None
                   else exclude_history)
    row_of = {str(u): i for i, u in enumerate(data.user_ids)}
    position = {int(u): i for i, u in enumerate(eval_set.users)}
    histories, targets, names = [], [], []
    for user in users:
      if str(user) not in row_of:
        raise ValueError(f"user {user!r} is not in dataset {data.name!r} (raw user ids, e.g. "
                         f"{', '.join(map(str, data.user_ids[:3]))})")
      row = row_of[str(user)]
      if row in position:
        histories.append(np.asarray(eval_set.histories[position[row]]))
        targets.append(int(eval_set.targets[position[row]]))
      else:
        histories.append(np.asarray(train[row]))
        targets.append(None)
      names.append(str(user))
    scores = self.item_scores(histories)
    if exclude:
      for r, history in enumerate(histories):
        scores[r, np.unique(history)] = -np.inf
    k = min(int(k), self.task.split.num_items)
    titles = self.item_titles()
    out = []
    for r, name in enumerate(names):
      top = np.argsort(-scores[r], kind="stable")[:k]
      out.append(Recommendation(
          user=name, split=split, history=histories[r].tolist(), items=top.tolist(),
          titles=[titles[i] for i in top], scores=scores[r, top].tolist(), target=targets[r],
          target_title="" if targets[r] is None else titles[targets[r]],
          history_titles=[titles[i] for i in histories[r]], excluded_history=exclude))
    return out

  def item_scores(self, histories: Sequence[np.ndarray]) -> np.ndarray:
    """[len(histories), num_items + 1] float32 scores of every item after each history
    (column 0, padding, is -inf); the histories are right-aligned to `data.max_len`."""
    from recjax.data import sequence_pipeline  # pylint: disable=g-import-not-at-top
    max_len = int(self.config.data.max_len)
    items = np.stack([sequence_pipeline.right_aligned(np.asarray(h, np.int32), max_len)
                      for h in histories])
    graphdef, state = nnx.split(self.model)
    replicated = NamedSharding(self.mesh, PartitionSpec())
    with jax.set_mesh(self.mesh):
      scores = _item_scores(graphdef, state, jax.device_put(items, replicated))
    return np.array(scores)

  def item_titles(self) -> list[str]:
    """Each internal item id's title (its raw id where the dataset has no title)."""
    data = self.task.data
    raw = [str(i) for i in data.item_ids]
    titles = data.item_text.get("title")
    if titles is None:
      return raw
    return [str(t) or f"item {r}" for t, r in zip(titles, raw)]

  def _ranking_split(self, split: str):
    if not self.ranks_items:
      raise ValueError(f"task {self.config.task!r} does not rank catalogue items after a "
                       "history; recommend() is for ranking tasks such as sasrec")
    if split not in SPLITS:
      raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    return getattr(self.task.split, split)

  # --- Language-model tasks -------------------------------------------------------------------

  @property
  def is_language_model(self) -> bool:
    """Whether the task is a language model with evaluation corpora (`generate` works)."""
    return hasattr(self.task, "tokenizer") and self._perplexity_evaluator() is not None

  def eval_corpora(self, split: str = "test") -> list[Any]:
    """The evaluation corpora of `split` (`config.eval.corpora`) of a language-model task."""
    if not self.is_language_model:
      raise ValueError(f"task {self.config.task!r} is not a language model with evaluation "
                       "corpora; eval_corpora() and generate() are for tasks such as lm")
    return list(self._perplexity_evaluator().corpora(split))

  def perplexities(self, results: Mapping[str, Mapping[str, float]]) -> str:
    """One line per evaluation corpus and split: its perplexity (and the answer's)."""
    lines = []
    for split, metrics in results.items():
      for key in sorted(k for k in metrics if k.endswith("/ppl")):
        corpus = key[:-len("/ppl")]
        line = (f"{corpus} ({split}): perplexity {metrics[key]:.3f} over "
                f"{int(metrics[f'{corpus}/tokens']):,} tokens")
        if f"{corpus}/target_ppl" in metrics:
          line += f"; the answer's perplexity {metrics[f'{corpus}/target_ppl']:.3f}"
        lines.append(line)
    return "\n".join(lines)

  def generate(self, n: int = 3, split: str = "test", corpus: str | None = None,
               max_new_tokens: int = 32) -> list[Generation]:
    """Greedy continuations of the prompts of `n` documents of an evaluation corpus.

    `corpus` (default: the first with answers, e.g. `histories`, else the first) is a name in
    `config.eval.corpora`; a document's prompt is its text before the answer (the whole text's
    first half where it has none), and decoding stops at the end-of-document token.
    """
    from recjax.models import decoding  # pylint: disable=g-import-not-at-top
    corpora = self.eval_corpora(split)
    if corpus is None:
      chosen = next((c for c in corpora if c.has_answer), corpora[0])
    else:
      chosen = next((c for c in corpora if c.name == corpus), None)
      if chosen is None:
        raise ValueError(f"corpus {corpus!r} is not among the evaluation corpora "
                         f"{[c.name for c in corpora]} (config.eval.corpora)")
    docs = chosen.documents
    pick = np.linspace(0, len(docs) - 1, min(n, len(docs))).astype(np.int64)
    tokenizer = self.task.tokenizer
    prompts, answers, prompt_ids = [], [], []
    for i in pick:
      doc = docs[int(i)]
      cut = doc.target_start if 0 < doc.target_start < len(doc.text) else len(doc.text) // 2
      prompts.append(doc.text[:cut])
      answers.append(doc.text[cut:])
      prompt_ids.append(tokenizer.encode(doc.text[:cut], add_bos=True).ids)
    tokens, lengths = decoding.left_pad(prompt_ids, pad_id=int(tokenizer.pad_id))
    cfg = decoding.DecodeConfig(max_new_tokens=int(max_new_tokens), method="greedy",
                                stop_tokens=(int(tokenizer.eos_id),),
                                pad_id=int(tokenizer.pad_id))
    replicated = NamedSharding(self.mesh, PartitionSpec())
    with jax.set_mesh(self.mesh):
      out = decoding.generate(self.model, *jax.device_put((tokens, lengths), replicated), cfg)
    new_tokens, new_lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    out_ids = [new_tokens[r, :new_lengths[r]] for r in range(len(prompts))]
    return [Generation(chosen.name, prompt, tokenizer.decode(ids, skip_special=True), answer,
                       ids.tolist())
            for prompt, answer, ids in zip(prompts, answers, out_ids)]

  def _perplexity_evaluator(self):
    return next((e for e in self.task.evaluators if e.name == "perplexity"), None)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _item_scores(graphdef, state, items):
  model = nnx.merge(graphdef, state)
  model.eval()
  user = model(items)[:, -1]  # the hidden state after the most recent item
  scores = jnp.einsum("bd,id->bi", user, model.item_table()).astype(jnp.float32)
  return scores.at[:, 0].set(-jnp.inf)


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def override_eval(config: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> None:
  """Sets `config.eval.KEY = value` for each item, typed as the key's current value; checked."""
  for key, value in overrides.items():
    if key not in config.eval:
      raise ValueError(f"config.eval has no key {key!r}; it has {', '.join(sorted(config.eval))}")
    current = config.eval[key]
    if isinstance(value, str) and not isinstance(current, str):
      kind = type(current)
      try:
        value = _BOOLS[value.strip().lower()] if kind is bool else kind(value)
      except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"config.eval.{key}={value!r}: expected {kind.__name__}") from e
    config.eval[key] = value
  config_lib.check_values(config)


def open_workdir(path: str | os.PathLike, step: int | str | None = None, *,
                 data_root: str | None = None,
                 mesh: Mapping[str, int] | None = None,
                 dtype: str | None = None,
                 eval_overrides: Mapping[str, Any] | None = None) -> Workdir:
  """Rebuilds the task of the run in `path` and restores one checkpoint's model.

  Args:
    path: the run's --workdir (local or gs://).
    step: None or "latest", "best" (see `choose_step`) or a step number.
    data_root: where the dataset is read from (default: the run's `config.data.root`, else
      $RECJAX_DATA_DIR): the task re-reads its data to evaluate.
    mesh: device mesh axes (default `config.mesh`), e.g. dict(data=-1) on a machine with
      another number of devices than the training one.
    dtype: the model's compute dtype (default the run's `config.model.dtype`).
    eval_overrides: `config.eval` keys to change for this evaluation, e.g.
      dict(evaluators="constrained", max_users=100); a string value is read as the key's
      type ("100" for an int key).
  Raises:
    WorkdirError: `path` is no readable workdir, has no such checkpoint, or the checkpoint
      is damaged; the message names the file.
    ValueError: an `eval_overrides` key that `config.eval` lacks, or a bad value.
  """
  root = str(path)
  config = read_config(root)
  if data_root is not None:
    config.data.root = data_root
  if dtype is not None:
    config.model.dtype = dtype
  if eval_overrides:
    override_eval(config, eval_overrides)
  _use_workdir_tokenizer(config, epath.Path(root))
  step, steps = choose_step(root, step, config)
  task = build_task(config)
  try:
    device_mesh = shard_lib.make_mesh(dict(mesh) if mesh is not None else config.mesh)
  except ValueError as e:
    raise WorkdirError(f"{e}; pass mesh=dict(data=-1) to use this machine's "
                       f"{jax.device_count()} devices") from e
  ckpt_dir = str(epath.Path(root) / "checkpoints")
  try:
    model = restore_model(config, task, ckpt_dir, step, device_mesh)
  except ckpt_lib.CheckpointError as e:
    raise WorkdirError(str(e)) from e
  return Workdir(path=root, config=config, task=task, step=step, steps=steps, mesh=device_mesh,
                 model=model)


def _use_workdir_tokenizer(config: ml_collections.ConfigDict, root: epath.Path) -> None:
  """Points `config.text.tokenizer` at the workdir's own trained tokenizer.

  The run recorded the path it wrote (`lm.tokenizer_vocab_size > 0`), which is gone once the
  workdir is moved or read from another machine; a gs:// copy is fetched to a local file, since
  SentencePiece reads local files only.
  """
  from recjax.tasks.lm import TOKENIZER_FILE  # pylint: disable=g-import-not-at-top
  if "lm" not in config or int(config.lm.get("tokenizer_vocab_size", 0)) <= 0:
    return
  own = root / TOKENIZER_FILE
  if not own.exists():
    return
  if "://" in str(root):
    local = epath.Path(tempfile.mkdtemp(prefix="recjax_tokenizer_")) / TOKENIZER_FILE
    own.copy(local)
    own = local
  config.text.tokenizer = str(own)


def plot_metrics(records: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None,
                 title: str = "") -> Figure:
  """A figure of metrics.jsonl records against the step: one panel per metric.

  `keys` default: the smoothed training loss (`train/loss_window`, else `train/loss`) and every
  validation metric at @10 or a perplexity (`valid/...@10`, `valid/.../ppl`).
  """
  try:
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top,redefined-outer-name
  except ImportError as e:
    raise ImportError("plot_metrics needs matplotlib: pip install matplotlib") from e
  present = {k for r in records for k in r if k not in ("step", "time")}
  if keys is None:
    loss = "train/loss_window" if "train/loss_window" in present else "train/loss"
    keys = [loss] + sorted(k for k in present if k.startswith("valid/") and
                           (k.endswith("@10") or k.endswith("/ppl")))
  keys = [k for k in keys if k in present]
  if not keys:
    raise ValueError(f"no metric to plot: the records have {sorted(present) or 'none'}")
  cols = min(3, len(keys))
  rows = -(-len(keys) // cols)
  fig = Figure(figsize=(4.2 * cols, 3.0 * rows), layout="constrained")
  for i, key in enumerate(keys):
    ax = fig.add_subplot(rows, cols, i + 1)
    points = [(r["step"], float(r[key])) for r in records if key in r]
    steps, values = zip(*points)
    ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3)
    ax.set_title(key, fontsize=9)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  return fig
