"""The experiment config schema shared by every `configs/*.py` file.

Experiment files start from `base_config(task)` and only change values; `check_config` then
rejects any key the schema does not know (typos in files or in `--config.x.y=v` overrides), naming
the key and the closest valid ones. `data.dataset` is free-form: it is a dataset spec for
`recjax.data.registry.load_dataset` and is validated there; so is `model.overrides` of the `lm`
task (LLMConfig fields, validated by `recjax.models.llm.get_preset`).
"""
from __future__ import annotations

import difflib

import ml_collections

from recjax.train import optim, trainer

FREE_FORM = ("data.dataset", "model.overrides")


def base_config(task: str) -> ml_collections.ConfigDict:
  """Every knob a `task` experiment has, at its recommended default."""
  config = ml_collections.ConfigDict()
  config.task = task  # sasrec | lm: which model family recjax.main trains.
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
  if task == "sasrec":
    from recjax.tasks import sasrec  # pylint: disable=g-import-not-at-top
    config.update(sasrec.default_config())
  elif task == "lm":
    from recjax.tasks import lm  # pylint: disable=g-import-not-at-top
    config.update(lm.default_config())
  else:
    raise ValueError(f"config.task='{task}' is unknown; choose from ('sasrec', 'lm')")
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
  """Raises ValueError naming every key that the task's schema does not have."""
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
