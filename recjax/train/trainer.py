"""The train loop every recjax model shares.

A model family plugs in as a `Task` (model, data, loss, evaluators); the trainer owns everything
else: the device mesh and shardings, the jitted train step with gradient accumulation, the
optimizer, where a run starts from (its own checkpoint > `config.init_from` > scratch; see
`train_and_evaluate`), Orbax checkpoints with the data iterator's position (exact resume),
preemption-safe saves on SIGTERM/SIGINT, NaN detection, evaluators at their own cadence,
metrics and the progress bar (which shows the mean loss over the logging window).
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Any, Mapping, Protocol, Sequence

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from flax.nnx import filterlib
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from recjax.train import checkpoint as ckpt_lib
from recjax.train import optim
from recjax.train import sharding as shard_lib
from recjax.train.metrics_writer import MetricsWriter


class Evaluator(Protocol):
  """One evaluation of a model on a split, run at its own cadence (see `evaluate`)."""

  name: str
  # Evaluate every this many training steps; 0 = every `train.eval_every_steps`.
  every_steps: int

  def __call__(self, model: nnx.Module, split: str, mesh: jax.sharding.Mesh) -> dict[str, float]:
    """Metrics on 'valid' or 'test', identical on every process."""


class Task(Protocol):
  """What a model family gives the trainer and the command-line tools."""

  # Row label of the model in results tables ("SASRec").
  name: str
  # Which nnx.Variable types the optimizer trains (nnx.Param; LoRA adapters only for LoRA).
  trainable: Any
  # nnx.Variable types, not trainable, that `loss` may set outside the gradient (an RQ-VAE's
  # dead-code restart), or None; the train step keeps their new values after the optimizer
  # update, and checkpoints them with the rest of the state.
  loss_updates: Any
  # Names of parameters that may keep their fresh initialisation when an `init_from` checkpoint
  # lacks them (a position table an LM checkpoint does not have); () for most tasks.
  fresh_parameters: tuple[str, ...]
  # Training steps in one pass over the training data.
  steps_per_epoch: int
  # The evaluations run on 'valid' during training and on 'valid' and 'test' at the end.
  evaluators: Sequence[Evaluator]
  # Metrics `recjax.main` and `recjax.evaluate` print as table columns.
  table_columns: list[str]
  # What the table's figures are ("full-catalogue ranking"), printed above it.
  results_heading: str

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """A freshly initialised model. Called under jit: no host side effects."""

  def train_data(self, process_index: int, process_count: int) -> grain.IterDataset:
    """Yields this process's rows of each global batch as numpy arrays, forever."""

  def loss(self, model: nnx.Module, batch: Mapping[str, jax.Array],
           rngs: nnx.Rngs) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """(sum of per-example losses, sum of example weights, extra metrics as sums).

    The trainer divides the loss and every extra metric by the weight. A task whose weight is
    not its number of targets (SASRec's `loss.normalize=mean` divides by a constant) reports
    that number as `extra["targets"]`; the trainer then also logs `loss_per_target`, the mean
    loss of one target, exact under gradient accumulation.
    """

  def summary(self) -> str:
    """What the task trains on (dataset, its data report, model size), printed at start."""

  def baselines(self, split: str) -> dict[str, dict[str, float]]:
    """Metrics of reference models on `split`, by table row name ({"Popularity": {...}})."""

  def pretrained_state(self, model: nnx.Module) -> nnx.State | None:
    """Weights a fresh run starts from (part of `model`'s state, on the shardings of its
    arrays), or None for a fresh initialisation. Never called when the run resumes its own
    checkpoint or initialises from another recjax workdir (`config.init_from`)."""


def due_evaluators(task: Task, step: int | None, eval_every_steps: int = 0) -> list[Evaluator]:
  """The evaluators to run after `step` (all of them when `step` is None: a final evaluation).

  An evaluator is due when `step` is a multiple of its `every_steps`, or of `eval_every_steps`
  (`train.eval_every_steps`) for those whose `every_steps` is 0; a cadence of 0 means only at
  the end.
  """
  evaluators = list(task.evaluators)
  if step is None:
    return evaluators
  due = []
  for evaluator in evaluators:
    every = int(evaluator.every_steps) or int(eval_every_steps)
    if every and step % every == 0:
      due.append(evaluator)
  return due


def evaluate(task: Task, model: nnx.Module, split: str, mesh: jax.sharding.Mesh,
             step: int | None = None, *, eval_every_steps: int = 0) -> dict[str, float]:
  """The merged metrics of the task's evaluators due at `step` (all when `step` is None).

  `eval_every_steps` is the cadence of evaluators whose own `every_steps` is 0. Two evaluators
  returning the same metric name is an error: nothing is silently overwritten.
  """
  out: dict[str, float] = {}
  owner: dict[str, str] = {}
  for evaluator in due_evaluators(task, step, eval_every_steps):
    metrics = evaluator(model, split, mesh)
    clash = sorted(set(metrics) & set(out))
    if clash:
      raise ValueError(f"evaluators {owner[clash[0]]!r} and {evaluator.name!r} both return "
                       f"metric(s) {clash} on {split}; metric names must be unique")
    out.update(metrics)
    owner.update({k: evaluator.name for k in metrics})
  return out


class RestoreError(ValueError):
  """`config.init_from` names weights this run cannot start from (said why and where)."""


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


@dataclasses.dataclass
class TrainState:
  """The model and optimizer as one nnx.State, plus what is needed to run steps on it."""

  graphdef: Any
  state: Any
  shardings: Any
  step: int

  def model(self) -> nnx.Module:
    model, _ = nnx.merge(self.graphdef, self.state)
    return model


def total_steps(config: ml_collections.ConfigDict, task: Task) -> int:
  """`train.num_steps` if set, else `train.num_epochs` passes over the training data."""
  if config.train.num_steps:
    return int(config.train.num_steps)
  return int(config.train.num_epochs * task.steps_per_epoch)


def create_train_state(config: ml_collections.ConfigDict, task: Task,
                       mesh: jax.sharding.Mesh) -> TrainState:
  """Initialises model and optimizer directly onto their shardings (no full host copy)."""
  tx = optim.make_optimizer(config.optimizer, total_steps(config, task))

  def create():
    model = task.build_model(nnx.Rngs(params=config.seed))
    optimizer = nnx.Optimizer(model, tx, wrt=task.trainable)
    return model, optimizer

  graphdef, abstract_state = nnx.split(nnx.eval_shape(create))
  shardings = shard_lib.state_shardings(abstract_state, mesh, config.sharding.logical_axis_rules)
  state = jax.jit(lambda: nnx.split(create())[1], out_shardings=shardings)()
  return TrainState(graphdef=graphdef, state=state, shardings=shardings, step=0)


def init_from_pretrained(task: Task, train_state: TrainState) -> bool:
  """Replaces the fresh weights by `task.pretrained_state(model)` unless that is None."""
  model, optimizer = nnx.merge(train_state.graphdef, train_state.state)
  pretrained = task.pretrained_state(model)
  if pretrained is None:
    return False
  nnx.update(model, pretrained)
  train_state.state = nnx.state((model, optimizer))
  return True


def is_recjax_workdir(path: str) -> bool:
  """Whether `path` was written by `train_and_evaluate` (its config.json names a task)."""
  try:
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
      return "task" in json.load(f)
  except (OSError, ValueError):
    return os.path.isdir(os.path.join(path, "checkpoints"))


def init_from_workdir(config: ml_collections.ConfigDict, task: Task, train_state: TrainState,
                      source: str, step: int = 0) -> tuple[int, list[str]]:
  """Replaces the fresh parameters by those of another recjax workdir's checkpoint.

  Reads only the model's `nnx.Param` variables (not the optimizer state or the data position)
  from `source`'s checkpoint at `step` (0: its latest), onto this run's shardings. Parameters
  of the trainable type that the checkpoint lacks (fresh LoRA adapters over a full-parameter
  run), and those named in `task.fresh_parameters`, keep their initialisation. `source` may
  have trained another task (an lm workdir for a CALRec or GLM stage): what must match is the
  parameters. Returns (the step read, the model config keys that differ).

  Raises:
    RestoreError: `source` has no finished checkpoint or none at `step`, or has parameters
      whose paths or shapes differ (each named, with both tasks and the differing keys of the
      two configs' model blocks).
  """
  what = f"config.init_from.path={source!r}"
  ckpt_dir = os.path.join(source, "checkpoints")
  steps = ckpt_lib.finished_steps(ckpt_dir) if os.path.isdir(ckpt_dir) else []
  if not steps:
    raise RestoreError(f"{what}: no finished checkpoint in {ckpt_dir}")
  if step and step not in steps:
    raise RestoreError(f"config.init_from.step={step}: {ckpt_dir} has no checkpoint for that "
                     f"step; it has {steps}")
  step = int(step or steps[-1])
  other = _read_json(os.path.join(source, "config.json"))
  differing = _dict_diff(other.get("model", {}),
                         json.loads(config.model.to_json_best_effort()) if "model" in config
                         else {})

  model, optimizer = nnx.merge(train_state.graphdef, train_state.state)
  params = nnx.to_flat_state(nnx.state(model, nnx.Param))
  every_path = {tuple(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model))}
  is_trainable = filterlib.to_predicate(task.trainable)
  saved = ckpt_lib.model_metadata(ckpt_dir, step)
  targets, missing, reshaped, grown = {}, [], {}, {}
  for path, var in params:
    key = tuple(map(str, path))
    value = var.get_value()
    if key not in saved:
      # A trainable type narrower than nnx.Param (LoRA adapters) may start fresh.
      if not ((type(var) is not nnx.Param and is_trainable(path, var)) or
              any(name in key for name in task.fresh_parameters)):
        missing.append(f"{'/'.join(key)} {tuple(value.shape)}")
    elif tuple(saved[key][0]) != tuple(value.shape):
      shapes = (tuple(saved[key][0]), tuple(value.shape))
      axis = _vocab_growth_axis(key, *shapes)
      if axis is None:
        reshaped.setdefault(shapes, []).append("/".join(key))
      else:  # read at the checkpoint's shape, grown below
        sharding = value.sharding
        if isinstance(sharding, NamedSharding):  # replicated: the old shape may not divide
          sharding = NamedSharding(sharding.mesh, PartitionSpec())
        targets[key] = jax.ShapeDtypeStruct(shapes[0], value.dtype, sharding=sharding)
        grown[key] = axis
    else:
      targets[key] = jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=value.sharding)
  extra = [f"{'/'.join(k)} {tuple(saved[k][0])}" for k in saved if k not in every_path]
  if missing or reshaped or extra:
    lines = [f"{what} (step {step}, task {other.get('task', '?')!r}) does not fit this "
             f"model (task {config.task!r}):"]
    # Grouped by the pair of shapes: a wider model changes dozens of arrays the same way.
    reshaped = [", ".join(paths[:3]) + (f" (and {len(paths) - 3} more)" if len(paths) > 3
                                        else "") + f": checkpoint {a}, this model {b}"
                for (a, b), paths in reshaped.items()]
    for title, items in (("parameters with other shapes", reshaped),
                         ("parameters the checkpoint lacks", missing),
                         ("checkpoint variables this model lacks", extra)):
      if items:
        shown = items[:10] + ([f"... and {len(items) - 10} more"] if len(items) > 10 else [])
        lines.append(f"  {title}: " + "; ".join(shown))
    lines.append("  the two configs' model blocks differ in: " + (", ".join(differing) or
                                                                 "nothing"))
    raise RestoreError("\n".join(lines))
  restored = ckpt_lib.restore_model_arrays(ckpt_dir, step, targets)
  from recjax.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  shardings = {tuple(map(str, p)): v.get_value().sharding for p, v in params}
  for key, axis in grown.items():
    # New tokens (semantic-ID codes, special tokens) get rows near the mean of the old ones,
    # as for a Hugging Face import (text.tokenizer.resize_embedding_table).
    old = np.moveaxis(np.asarray(jax.device_get(restored[key])), axis, 0)
    size = next(v.get_value().shape[axis] for p, v in params if tuple(map(str, p)) == key)
    table = np.moveaxis(tokenizer_lib.resize_embedding_table(old, size, rng=int(config.seed)),
                        0, axis)
    restored[key] = jax.device_put(np.ascontiguousarray(table), shardings[key])
    differing.append(f"{'/'.join(key)} grown from {old.shape[0]} to {size} vocabulary rows")
  nnx.update(model, nnx.from_flat_state(
      [(path, var.replace(restored[tuple(map(str, path))])) for path, var in params
       if tuple(map(str, path)) in restored]))
  train_state.state = nnx.state((model, optimizer))
  return step, differing


def _vocab_growth_axis(key: tuple[str, ...], saved: tuple[int, ...],
                       wanted: tuple[int, ...]) -> int | None:
  """The vocabulary axis of the LLM's token table (`embedding` [V, H]) or output head
  (`lm_head` [H, V]) when `wanted` only adds vocabulary rows to `saved`, else None."""
  axis = {"embedding": 0, "lm_head": 1}.get(key[-1]) if len(key) == 1 else None
  if axis is None or len(saved) != 2 or len(wanted) != 2:
    return None
  other = 1 - axis
  if saved[other] != wanted[other] or saved[axis] >= wanted[axis]:
    return None
  return axis


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _dict_diff(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
  """'key (a -> b)' for every nested key whose value differs between two JSON dicts."""
  out = []
  for key in sorted(set(a) | set(b)):
    x, y = a.get(key, "<absent>"), b.get(key, "<absent>")
    if isinstance(x, dict) and isinstance(y, dict):
      out += _dict_diff(x, y, f"{prefix}{key}.")
    elif x != y:
      out.append(f"{prefix}{key} ({x!r} -> {y!r})")
  return out


def make_train_step(config: ml_collections.ConfigDict, task: Task, train_state: TrainState,
                    mesh: jax.sharding.Mesh):
  """The jitted step: (state, batch, step) -> (new state, metrics). Donates the old state."""
  graphdef = train_state.graphdef
  accum = int(config.train.grad_accum_steps)
  base_key = jax.random.key(config.seed)

  # Non-trainable variables the loss may change outside the gradient (a quantiser's codebook
  # statistics): their new values are kept after the optimizer step. None for most tasks.
  loss_updates = task.loss_updates or nnx.Nothing

  def step_fn(state, batch, step):
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    model_def, params, kept, rest = nnx.split(model, task.trainable, loss_updates, ...)

    def loss_fn(params, kept, batch, key):
      # New Variables (copy=True) at this trace level, so that the loss may set `kept` ones.
      merged = nnx.merge(model_def, params, kept, rest, copy=True)
      loss_sum, weight, extra = task.loss(merged, batch, nnx.Rngs(dropout=key))
      return loss_sum, (weight, extra, nnx.state(merged, loss_updates))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    key = jax.random.fold_in(base_key, step)
    if accum == 1:
      (loss_sum, (weight, extra, kept)), grads = grad_fn(params, kept, batch, key)
    else:
      # Microbatch k takes rows k, k+accum, ...: every microbatch is spread over all devices.
      micro = jax.tree.map(
          lambda x: jnp.swapaxes(x.reshape((x.shape[0] // accum, accum) + x.shape[1:]), 0, 1),
          batch)

      def body(carry, inputs):
        sums, kept = carry
        mb, k = inputs
        (l, (w, e, kept)), g = grad_fn(params, kept, mb, jax.random.fold_in(key, k))
        return (jax.tree.map(jnp.add, sums, (l, w, e, g)), kept), None

      shapes = jax.eval_shape(grad_fn, params, kept, jax.tree.map(lambda x: x[0], micro), key)
      (l0, (w0, e0, _)), g0 = shapes
      init = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (l0, w0, e0, g0))
      ((loss_sum, weight, extra, grads), kept), _ = jax.lax.scan(
          body, (init, kept), (micro, jnp.arange(accum)))
    # Task losses are sums: dividing once by the total weight makes accumulation exact.
    weight = jnp.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g / weight, grads)
    optimizer.update(model, grads)
    nnx.update(model, kept)
    metrics = {"loss": loss_sum / weight, "grad_norm": _global_norm(grads)}
    targets = extra.pop("targets", None)
    if targets is not None:
      metrics["loss_per_target"] = loss_sum / jnp.maximum(targets, 1.0)
    metrics.update({k: v / weight for k, v in extra.items()})
    return nnx.state((model, optimizer)), metrics

  batch_sh = shard_lib.batch_sharding(mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(step_fn, in_shardings=(train_state.shardings, batch_sh, replicated),
                 out_shardings=(train_state.shardings, replicated), donate_argnums=(0,))


def _global_norm(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop polls, so a checkpoint is saved before exit."""

  def __init__(self):
    self.received: int | None = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread (e.g. inside a notebook worker): leave as is.
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.received = signum

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def should_stop(self) -> bool:
    stop = self.received is not None
    if jax.process_count() > 1:  # Every process must stop at the same step to save together.
      stop = bool(multihost_utils.process_allgather(np.int32(stop)).max())
    return stop


@dataclasses.dataclass
class TrainResult:
  """What `train_and_evaluate` ends with."""

  step: int
  train_state: TrainState
  losses: list[float]  # training loss at every step run in this call
  # Final 'valid/...' and 'test/...' metrics (empty if stopped early). With train.best_metric
  # they are those of the best validated checkpoint, whose step is under 'best_step', and
  # `train_state` holds that checkpoint.
  metrics: dict[str, float]
  stopped_by_signal: bool = False


def train_and_evaluate(config: ml_collections.ConfigDict, task: Task, workdir: str,
                       devices: list[jax.Device] | None = None) -> TrainResult:
  """Trains `task` as configured, then evaluates it on 'valid' and 'test'.

  The run starts from the first of these that exists:
  1. the latest checkpoint in `workdir/checkpoints`: a resume, with the optimizer state and the
     data iterator's position, so an interrupted run continues exactly (a finished one is only
     evaluated again);
  2. `config.init_from.path`: another recjax workdir, whose model parameters (only those) are
     read at its latest checkpoint or at `config.init_from.step`, with a fresh optimizer and
     data order; or a directory the task itself loads (`task.pretrained_state`, e.g. a Hugging
     Face checkpoint for the lm task);
  3. a fresh initialisation, replaced by `task.pretrained_state(model)` if it gives weights.
  Which one it was is printed on stdout (process 0).

  `devices` restricts the mesh to a subset of `jax.devices()` (default: all of them).
  """
  tcfg = config.train
  if tcfg.best_metric and (not tcfg.eval_every_steps or not tcfg.checkpoint_every_steps or
                           tcfg.checkpoint_every_steps % tcfg.eval_every_steps):
    raise ValueError("train.best_metric needs every periodic checkpoint to be evaluated: set "
                     "train.eval_every_steps to a divisor of train.checkpoint_every_steps")
  mesh = shard_lib.make_mesh(config.mesh, devices)
  num_steps = total_steps(config, task)
  is_chief = jax.process_index() == 0
  if is_chief:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2, sort_keys=True))

  train_state = create_train_state(config, task, mesh)
  train_step = make_train_step(config, task, train_state, mesh)
  data_iter = iter(task.train_data(jax.process_index(), jax.process_count()))

  manager = ckpt_lib.make_manager(
      os.path.join(workdir, "checkpoints"), max_to_keep=tcfg.max_checkpoints_to_keep,
      async_save=tcfg.async_checkpointing, best_metric=tcfg.best_metric or None,
      best_mode=tcfg.best_mode)
  _start(config, task, train_state, manager, data_iter, num_steps)

  writer = MetricsWriter(workdir)
  losses: list[float] = []
  progress = _progress_bar(is_chief and tcfg.progress_bar, train_state.step, num_steps)
  valid_metrics: dict[str, float] = {}
  valid_step = -1
  stopped = False
  pending: tuple[int, dict[str, jax.Array]] | None = None
  window_start, window_steps = time.perf_counter(), 0
  window_sums: dict[str, float] = {}  # loss and loss_per_target summed over the window

  def finish_step(step: int, metrics: dict[str, jax.Array]):
    """Host-side bookkeeping for a finished step, one step behind to keep dispatch async."""
    nonlocal window_start, window_steps
    loss = float(metrics["loss"])
    if not np.isfinite(loss):
      manager.wait_until_finished()
      raise NonFiniteLossError(
          f"training loss is {loss} at step {step}; stopping. The last good checkpoint in "
          f"{workdir}/checkpoints (step {manager.latest_step()}) is kept. Lower "
          f"optimizer.learning_rate or set optimizer.clip_grad_norm.")
    losses.append(loss)
    window_steps += 1
    for name in ("loss", "loss_per_target"):
      if name in metrics:
        window_sums[name] = window_sums.get(name, 0.0) + float(metrics[name])
    if step % tcfg.log_every_steps == 0 or step == num_steps:
      elapsed = time.perf_counter() - window_start
      scalars = {k: float(v) for k, v in metrics.items()}
      # train/loss is this step's loss; batches differ (length buckets), so the means over
      # the steps since the last log are the figures to watch.
      for name, total in window_sums.items():
        scalars[f"{name}_window"] = total / window_steps
      scalars["steps_per_sec"] = window_steps / max(elapsed, 1e-9)
      writer.write(step, {f"train/{k}": v for k, v in scalars.items()})
      if progress is not None:
        postfix = {"loss": f"{scalars['loss_window']:.4f}"}
        if "loss_per_target_window" in scalars:
          postfix["per_target"] = f"{scalars['loss_per_target_window']:.4f}"
        progress.set_postfix(postfix, refresh=False)
      window_start, window_steps = time.perf_counter(), 0
      window_sums.clear()

  def flush_pending():
    """Checks the last dispatched step now (before evaluating, saving or stopping)."""
    nonlocal pending
    if pending is not None:
      finish_step(*pending)
      pending = None

  every = int(tcfg.eval_every_steps)
  with _StopSignal() as stop_signal, jax.set_mesh(mesh):
    while train_state.step < num_steps:
      step = train_state.step + 1
      batch = shard_lib.global_batch(next(data_iter), mesh)
      train_state.state, metrics = train_step(train_state.state, batch, step)
      train_state.step = step
      if pending is not None:
        finish_step(*pending)
      pending = (step, metrics)
      if progress is not None:
        progress.update(1)

      due = due_evaluators(task, step, every) if step < num_steps else []
      if due:
        flush_pending()
        valid_metrics = _evaluate(task, train_state, mesh, "valid", writer, step, every)
        valid_step = step
        # Checkpoints are ranked by best_metric: it must come from an evaluator run with them.
        if (tcfg.best_metric and tcfg.best_metric not in valid_metrics and
            (len(due) == len(task.evaluators) or step % tcfg.checkpoint_every_steps == 0)):
          raise ValueError(f"train.best_metric='{tcfg.best_metric}' is not among the "
                           f"validation metrics at step {step}: {sorted(valid_metrics)}")
      # The last step is saved around the final evaluation, below.
      if (tcfg.checkpoint_every_steps and step % tcfg.checkpoint_every_steps == 0 and
          step < num_steps):
        flush_pending()  # Never save a state whose loss has not been checked.
        # Only metrics of this very state may rank it among the best checkpoints.
        ckpt_lib.save(manager, step, train_state.state, data_iter,
                      metrics=valid_metrics if valid_step == step else None)
      if stop_signal.should_stop():
        flush_pending()
        logging.warning("signal %s received: saving step %d and exiting", stop_signal.received,
                        step)
        if manager.latest_step() != step:  # this step may have just been checkpointed
          ckpt_lib.save(manager, step, train_state.state, data_iter, force=True)
        stopped = True
        break
    flush_pending()

    final: dict[str, float] = {}
    if not stopped:
      if not tcfg.best_metric and manager.latest_step() != train_state.step:
        # Saved before the final evaluation (which can take longer than training): a run
        # killed during it resumes straight to the evaluation. Ranking by best_metric needs
        # the evaluation's metrics, so that case saves after it.
        ckpt_lib.save(manager, train_state.step, train_state.state, data_iter, force=True)
      valid_metrics = _evaluate(task, train_state, mesh, "valid", writer, train_state.step)
      if tcfg.best_metric and tcfg.best_metric not in valid_metrics:
        raise ValueError(f"train.best_metric='{tcfg.best_metric}' is not among the validation "
                         f"metrics: {sorted(valid_metrics)}")
      if manager.latest_step() != train_state.step:
        ckpt_lib.save(manager, train_state.step, train_state.state, data_iter,
                      metrics=valid_metrics, force=True)
      best_step = train_state.step
      if tcfg.best_metric:
        manager.wait_until_finished()
        best_step = manager.best_step()
        final["best_step"] = best_step
      if best_step != train_state.step:
        # As RecBole does: the reported figures are those of the best validated checkpoint, so
        # the final state is never evaluated on 'test' (the final state is saved: swap the best
        # one in). Its valid metrics are recomputed with every evaluator, not only periodic ones.
        train_state.state = ckpt_lib.restore(manager, best_step, train_state.state, None)
        valid_metrics = evaluate(task, train_state.model(), "valid", mesh)
        logging.info("best checkpoint: step %d (valid %s=%.4f)", best_step, tcfg.best_metric,
                     valid_metrics[tcfg.best_metric])
      test_metrics = _evaluate(task, train_state, mesh, "test", writer, best_step)
      final.update({**{f"valid/{k}": v for k, v in valid_metrics.items()},
                    **{f"test/{k}": v for k, v in test_metrics.items()}})
  manager.wait_until_finished()
  manager.close()
  writer.close()
  if progress is not None:
    progress.close()
  if is_chief and final:
    num_params = sum(int(np.prod(v.get_value().shape)) for _, v in
                     nnx.to_flat_state(nnx.state(train_state.model(), nnx.Param)))
    # Atomic: a results.json marks a finished run (recjax.chain, the scaling sweep skip it).
    path = os.path.join(workdir, "results.json")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
      json.dump({"step": train_state.step, "num_params": num_params, **final}, f, indent=2,
                sort_keys=True)
    os.replace(path + ".tmp", path)
  return TrainResult(step=train_state.step, train_state=train_state, losses=losses,
                     metrics=final, stopped_by_signal=stopped)


def _say(message: str) -> None:
  """A fact the user should see: on stdout (process 0) and in the log."""
  logging.info("%s", message)
  if jax.process_index() == 0:
    print(message, flush=True)


def _start(config: ml_collections.ConfigDict, task: Task, train_state: TrainState, manager,
           data_iter, num_steps: int) -> None:
  """Fills `train_state` from the first source in the restore order of `train_and_evaluate`."""
  latest = manager.latest_step()
  if latest is not None:
    train_state.state = ckpt_lib.restore(manager, latest, train_state.state, data_iter)
    train_state.step = latest
    if latest >= num_steps:
      _say(f"training already complete at step {latest}; evaluating")
    else:
      _say(f"resumed from step {latest} of {num_steps}")
    return
  source = str(config.init_from.path) if "init_from" in config else ""
  if source and is_recjax_workdir(source):
    step, differing = init_from_workdir(config, task, train_state, source,
                                        int(config.init_from.step))
    _say(f"initialised the parameters from {source} at step {step} (optimizer and data "
         "order start fresh)" + (f"; model config differs in {', '.join(differing)}"
                                 if differing else ""))
    return
  if source and not os.path.exists(source):
    raise RestoreError(f"config.init_from.path={source!r} does not exist")
  if init_from_pretrained(task, train_state):
    _say("initialised the parameters from " + (source or "the task's pretrained weights"))
  elif source:
    raise RestoreError(f"config.init_from.path={source!r} is neither a recjax workdir (a "
                       f"config.json naming a task, and checkpoints/) nor weights the "
                       f"{task.name} task loads")


def _evaluate(task: Task, train_state: TrainState, mesh, split: str, writer: MetricsWriter,
              step: int, every: int | None = None) -> dict[str, float]:
  """Runs the evaluators due at `step` (all when `every` is None) and logs their metrics."""
  start = time.perf_counter()
  metrics = evaluate(task, train_state.model(), split, mesh,
                     step=None if every is None else step, eval_every_steps=every or 0)
  metrics["eval_seconds"] = time.perf_counter() - start
  writer.write(step, {f"{split}/{k}": v for k, v in metrics.items()})
  logging.info("step %d %s: %s", step, split,
               ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
  return metrics


def _progress_bar(enabled: bool, initial: int, total: int):
  if not enabled:
    return None
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
              mininterval=1.0)


def default_config() -> ml_collections.ConfigDict:
  """The `train` block every experiment config starts from."""
  return ml_collections.ConfigDict(dict(
      num_steps=0,                   # training steps; 0 = use num_epochs.
      num_epochs=10,                 # passes over the training data when num_steps == 0.
      batch_size=128,                # global batch (all processes together).
      grad_accum_steps=1,            # microbatches per step; batch_size must divide evenly.
      log_every_steps=50,            # train metrics to TensorBoard/metrics.jsonl.
      eval_every_steps=0,            # validation every N steps (0: only at the end).
      checkpoint_every_steps=1000,   # periodic checkpoints (a final one is always written).
      max_checkpoints_to_keep=3,     # older (or worse, with best_metric) ones are deleted.
      async_checkpointing=True,      # write checkpoints in the background.
      # Keep the best checkpoints by this validation metric (e.g. "ndcg@10") and report the final
      # valid/test figures of the best one, as RecBole does; "" keeps the latest and reports it.
      best_metric="",
      best_mode="max",               # max | min for best_metric.
      progress_bar=True,             # tqdm bar with loss, steps/s and ETA (process 0 only).
  ))


def default_sharding_config() -> ml_collections.ConfigDict:
  """Logical axis -> mesh axes rules (MaxText style); the first rule that fits wins."""
  return ml_collections.ConfigDict(dict(logical_axis_rules=[
      ("batch", ("data", "fsdp")),
      ("vocab", "tensor"), ("vocab", "fsdp"),
      ("items", "tensor"), ("items", "fsdp"),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("kv_heads", "tensor"),
      ("head_dim", None),
      ("layers", None),
  ]))
