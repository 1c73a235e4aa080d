"""The experiment config schema shared by every `configs/*.py` file.

Experiment files start from `base_config(task)` and only change values; `check_config` then
rejects any key the schema does not know (typos in files or in `--config.x.y=v` overrides), naming
the key and the closest valid ones, and any value out of its range (`check_values`), naming the
key, the value and the range. `data.dataset` is free-form: it is a dataset spec for
`recjax.data.registry.load_dataset` and is validated there (keys too: `--config.data.dataset.k=v`
may add a key, and the registry names the valid ones); so is `model.overrides` of the `lm` task
(LLMConfig fields, validated by `recjax.models.llm.get_preset`).
"""
from __future__ import annotations

import difflib
import math
import numbers
from typing import Any, Callable

import ml_collections

from recjax.tasks import TASKS, task_entry
from recjax.train import optim, trainer

FREE_FORM = ("data.dataset", "model.overrides")


def base_config(task: str) -> ml_collections.ConfigDict:
  """Every knob a `task` experiment has, at its recommended default."""
  entry = task_entry(task)
  config = ml_collections.ConfigDict()
  config.task = task  # which model family recjax.main trains: a name in recjax.tasks.TASKS.
  config.seed = 0     # seeds initialisation, data order, negatives and dropout.
  config.data = ml_collections.ConfigDict(dict(
      dataset=ml_collections.ConfigDict({"name": "synthetic"}),  # a registry name or full spec.
      root="",               # data root; "" = $RECJAX_DATA_DIR. Overridable: --config.data.root.
      split="leave_one_out",  # leave_one_out | temporal.
      valid_fraction=0.1,    # temporal split only: share of interactions in validation window.
      test_fraction=0.1,     # temporal split only: share of interactions in test window.
      max_len=50,            # longest history the model reads (most recent kept).
      length_bucketing=True,  # batch users of similar length, trim padding (see pipeline docs).
      bucket_window=64,      # batches sorted together when bucketing (mixing vs. padding).
      num_threads=2,         # Grain threads building batches.
      prefetch=4,            # batches buffered ahead of the model.
  ))
  # Where a fresh run's parameters come from. A checkpoint in the run's own workdir always
  # wins (a resume); then init_from; then the task's own initialisation (or pretrained weights).
  config.init_from = ml_collections.ConfigDict(dict(
      path="",  # "" = none; another recjax workdir: its model parameters only (optimizer and
                # data order start fresh), shapes must match; a directory the task loads itself
                # (the lm task: a local Hugging Face checkpoint).
      step=0,   # checkpoint step of that workdir; 0 = its latest.
  ))
  config.mesh = ml_collections.ConfigDict(dict(
      data=-1,   # data-parallel axis; -1 takes all remaining devices.
      fsdp=1,    # parameter/optimizer sharding axis (ZeRO-3 style).
      tensor=1,  # tensor-parallel axis (heads, mlp, vocab).
  ))
  config.sharding = trainer.default_sharding_config()
  config.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="",  # "host:port" of process 0; "auto" = detect (TPU pod,
                               # SLURM); "" = single process.
      num_processes=1,         # processes in the job.
      process_id=-1,           # this process; -1 = from the environment (TPU/SLURM).
      local_device_ids="",     # comma-separated local device ids; "" = all.
  ))
  config.train = trainer.default_config()
  config.optimizer = optim.default_config()
  config.update(entry.default_config())
  return config


def cpu_backbone(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The small LLM recipe configs/lm.py, glm.py and calrec.py share: `tiny_llama` widened to
  4 x 128 (about 1M parameters, float32), 16 rows per step, AdamW with a cosine schedule; what
  trains in minutes on 2 CPU cores. Sets `config` in place and returns it."""
  config.model.preset = "tiny_llama"
  # Unrolled layers: on XLA:CPU the scanned backward pass transposes activations slowly
  # (benchmarks/lm_cpu.py, docs/benchmarks.md); keep scan_layers=True on accelerators.
  config.model.overrides = dict(num_layers=4, hidden_size=128, num_heads=4, num_kv_heads=4,
                                head_dim=32, mlp_dim=384, scan_layers=False)
  config.model.dtype = "float32"
  config.train.batch_size = 16
  config.train.log_every_steps = 25
  config.train.checkpoint_every_steps = 100
  config.optimizer.update(dict(name="adamw", learning_rate=3e-3, b2=0.95, weight_decay=0.01,
                               schedule="cosine", warmup_steps=30, end_factor=0.1,
                               clip_grad_norm=1.0))
  return config


def _flatten(cfg: ml_collections.ConfigDict, prefix: str = "") -> dict[str, object]:
  out = {}
  for key, value in cfg.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict) and name not in FREE_FORM:
      out.update(_flatten(value, name + "."))
    else:
      out[name] = value
  return out


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every unknown key, else every value out of its range."""
  if "task" not in config:
    raise ValueError("config has no 'task' key; start configs from recjax.config.base_config()")
  known = _flatten(base_config(config.task))
  unknown = [k for k in _flatten(config) if k not in known]
  if unknown:
    lines = []
    for key in unknown:
      close = difflib.get_close_matches(key, list(known), n=3)
      lines.append(f"  {key}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    raise ValueError("unknown config keys:\n" + "\n".join(lines))
  check_values(config)


# --- Value ranges ------------------------------------------------------------------------------
# Values the schema's types accept but nothing can run (data.max_len=0 trains on nothing, then
# fails deep inside evaluation): checked up front. A rule applies to every task that has the key.

def _integer(low: int, high: int | None = None) -> tuple[Callable[[Any], bool], str]:
  text = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
  ok = lambda v: (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low and
                  (high is None or v <= high))
  return ok, text


def _real(low: float, high: float | None = None, *, low_open: bool = False,
          high_open: bool = False) -> tuple[Callable[[Any], bool], str]:
  if high is None:
    text = f"a number {'>' if low_open else '>='} {low:g}"
  else:
    text = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

  def ok(v):
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v):
      return False
    if v < low or (low_open and v == low):
      return False
    return high is None or v < high or (v == high and not high_open)

  return ok, text


def _one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: v in choices), f"one of {choices}"


def _ks(v) -> bool:
  values = tuple(v) if isinstance(v, (tuple, list)) else (v,)
  return bool(values) and all(_integer(1)[0](k) for k in values)


RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _integer(0),
    "data.split": _one_of("leave_one_out", "temporal"),
    "data.valid_fraction": _real(0.0, 1.0, low_open=True, high_open=True),
    "data.test_fraction": _real(0.0, 1.0, low_open=True, high_open=True),
    "data.max_len": _integer(1),
    "data.bucket_window": _integer(1),
    "data.num_threads": _integer(0),
    "data.prefetch": _integer(0),
    "init_from.step": _integer(0),
    "mesh.data": (lambda v: v == -1 or _integer(1)[0](v), "-1 or an integer >= 1"),
    "mesh.fsdp": (lambda v: v == -1 or _integer(1)[0](v), "-1 or an integer >= 1"),
    "mesh.tensor": (lambda v: v == -1 or _integer(1)[0](v), "-1 or an integer >= 1"),
    "distributed.num_processes": _integer(1),
    "train.num_steps": _integer(0),
    "train.num_epochs": _real(0.0),
    "train.batch_size": _integer(1),
    "train.grad_accum_steps": _integer(1),
    "train.log_every_steps": _integer(1),
    "train.eval_every_steps": _integer(0),
    "train.checkpoint_every_steps": _integer(0),
    "train.max_checkpoints_to_keep": _integer(1),
    "train.best_mode": _one_of("max", "min"),
    "optimizer.name": _one_of(*optim.OPTIMIZERS),
    "optimizer.schedule": _one_of(*optim.SCHEDULES),
    "optimizer.learning_rate": _real(0.0, low_open=True),
    "optimizer.b1": _real(0.0, 1.0, high_open=True),
    "optimizer.b2": _real(0.0, 1.0, high_open=True),
    "optimizer.eps": _real(0.0),
    "optimizer.weight_decay": _real(0.0),
    "optimizer.warmup_steps": _integer(0),
    "optimizer.end_factor": _real(0.0, 1.0),
    "optimizer.clip_grad_norm": _real(0.0),
    # SASRec
    "model.hidden": _integer(1),
    "model.num_blocks": _integer(1),
    "model.num_heads": _integer(1),
    "model.dropout": _real(0.0, 1.0, high_open=True),
    "loss.num_negatives": _integer(1),
    "loss.gbce_t": _real(0.0, 1.0),
    "eval.ks": (_ks, "a non-empty tuple of integers >= 1"),
    "eval.batch_size": _integer(1),
    "eval.max_users": _integer(0),
    "eval.sampled_negatives": _integer(0),
    # lm
    "model.vocab_size": _integer(0),
    "model.vocab_multiple": _integer(1),
    "model.lora.rank": _integer(0),
    "model.lora.alpha": _real(0.0, low_open=True),
    "lm.tokenizer_vocab_size": _integer(0),
    "lm.tokenizer_max_documents": _integer(0),
    "eval.max_documents": _integer(0),
    "text.seq_len": _integer(2),
    "text.item_max_chars": _integer(1),
    "text.max_history_items": _integer(1),
    "text.min_history_items": _integer(0),
    "text.num_candidates": _integer(0),
    "text.semantic_codes": _integer(0),
    "text.target_len": _integer(0),
    "text.worker_count": _integer(0),
    "text.item_format": _one_of("text", "semantic_id", "both"),
    # glm
    "eval.p5.max_users": _integer(0),
    "eval.p5.num_negatives": _integer(1),
    "eval.p5.num_beams": _integer(1),
    "eval.p5.max_new_tokens": _integer(1),
}


def check_values(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every key whose value is outside `RANGES` or inconsistent."""
  flat = _flatten(config)
  get = flat.get
  errors = []
  for key, (ok, text) in RANGES.items():
    if key == "loss.num_negatives" and get("loss.name") == "ce":
      continue  # full softmax samples no negatives
    if key in flat and not ok(flat[key]):
      errors.append(f"  config.{key}={flat[key]!r}: must be {text}")

  if [get(f"mesh.{a}") for a in ("data", "fsdp", "tensor")].count(-1) > 1:
    errors.append(f"  config.mesh={dict(config.mesh)}: at most one axis may be -1")
  batch, accum = get("train.batch_size"), get("train.grad_accum_steps")
  if isinstance(batch, int) and isinstance(accum, int) and accum >= 1 and batch % accum:
    errors.append(f"  config.train.grad_accum_steps={accum}: must divide "
                  f"train.batch_size={batch}")
  if (get("data.split") == "temporal" and isinstance(get("data.valid_fraction"), float) and
      isinstance(get("data.test_fraction"), float) and
      get("data.valid_fraction") + get("data.test_fraction") >= 1.0):
    errors.append(f"  config.data.valid_fraction={get('data.valid_fraction')} + "
                  f"config.data.test_fraction={get('data.test_fraction')}: must sum to < 1")
  hidden, heads = get("model.hidden"), get("model.num_heads")
  if isinstance(hidden, int) and isinstance(heads, int) and heads >= 1 and hidden % heads:
    errors.append(f"  config.model.num_heads={heads}: must divide model.hidden={hidden}")
  if (isinstance(get("text.min_history_items"), int) and
      isinstance(get("text.max_history_items"), int) and
      get("text.min_history_items") > get("text.max_history_items")):
    errors.append(f"  config.text.min_history_items={get('text.min_history_items')}: must be "
                  f"<= text.max_history_items={get('text.max_history_items')}")
  best, every, ckpt = (get("train.best_metric"), get("train.eval_every_steps"),
                       get("train.checkpoint_every_steps"))
  if best and isinstance(every, int) and isinstance(ckpt, int) and (
      not every or not ckpt or ckpt % every):
    errors.append(f"  config.train.best_metric={best!r} ranks the periodic checkpoints by "
                  f"validation: train.eval_every_steps={every} must divide "
                  f"train.checkpoint_every_steps={ckpt} (both > 0)")
  if "eval.evaluators" in flat:
    from recjax.eval import evaluators  # pylint: disable=g-import-not-at-top
    try:
      evaluators.parse_spec(flat["eval.evaluators"])
    except ValueError as e:
      errors.append(f"  {e}")
  if errors:
    raise ValueError("config values out of range:\n" + "\n".join(errors))
