"""Model families as trainer Tasks: the one table of tasks, and building one from a config.

A task is a name in `TASKS` with two functions: its config blocks (merged by
`recjax.config.base_config(name)` over the shared ones) and its builder (data + Task).
Adding a task: a module with `default_config()` and a class implementing
`recjax.train.trainer.Task`, plus one entry here.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import ml_collections

from recjax.train.trainer import Task


class TaskEntry(NamedTuple):
  """A task's config blocks (model, loss, eval, ...) and how to build it from a config."""

  default_config: Callable[[], ml_collections.ConfigDict]
  # (config, workdir) -> Task. workdir is None when re-created from a workdir's config.json.
  build: Callable[[ml_collections.ConfigDict, str | None], Task]


def _sasrec_config() -> ml_collections.ConfigDict:
  from recjax.tasks import sasrec  # pylint: disable=g-import-not-at-top
  return sasrec.default_config()


def _build_sasrec(config: ml_collections.ConfigDict, workdir: str | None):
  del workdir  # SASRec derives nothing from the data that needs keeping
  from recjax.data import registry, splits  # pylint: disable=g-import-not-at-top
  from recjax.tasks.sasrec import SASRecTask  # pylint: disable=g-import-not-at-top
  data = registry.load_dataset(config.data.dataset.to_dict(), config.data.root or None)
  kwargs = {}
  if config.data.split == "temporal":
    kwargs = dict(valid_fraction=config.data.valid_fraction,
                  test_fraction=config.data.test_fraction)
  split = splits.make_split(data, config.data.split, **kwargs)
  return SASRecTask(config, data, split)


def _lm_config() -> ml_collections.ConfigDict:
  from recjax.tasks import lm  # pylint: disable=g-import-not-at-top
  return lm.default_config()


def _build_lm(config: ml_collections.ConfigDict, workdir: str | None):
  from recjax.tasks.lm import LMTask  # pylint: disable=g-import-not-at-top
  return LMTask(config, workdir)


def _calrec_config() -> ml_collections.ConfigDict:
  from recjax.tasks import calrec  # pylint: disable=g-import-not-at-top
  return calrec.default_config()


def _build_calrec(config: ml_collections.ConfigDict, workdir: str | None):
  from recjax.tasks.calrec import CALRecTask  # pylint: disable=g-import-not-at-top
  return CALRecTask(config, workdir)


def _glm_config() -> ml_collections.ConfigDict:
  from recjax.tasks import glm  # pylint: disable=g-import-not-at-top
  return glm.default_config()


def _build_glm(config: ml_collections.ConfigDict, workdir: str | None):
  from recjax.tasks.glm import GLMTask  # pylint: disable=g-import-not-at-top
  return GLMTask(config, workdir)


def _rqvae_config() -> ml_collections.ConfigDict:
  from recjax.tasks import semantic_ids  # pylint: disable=g-import-not-at-top
  return semantic_ids.rqvae_config()


def _build_rqvae(config: ml_collections.ConfigDict, workdir: str | None):
  from recjax.tasks.semantic_ids import RQVAETask  # pylint: disable=g-import-not-at-top
  return RQVAETask(config, workdir)


def _sae_config() -> ml_collections.ConfigDict:
  from recjax.tasks import semantic_ids  # pylint: disable=g-import-not-at-top
  return semantic_ids.sae_config()


def _build_sae(config: ml_collections.ConfigDict, workdir: str | None):
  from recjax.tasks.semantic_ids import SAETask  # pylint: disable=g-import-not-at-top
  return SAETask(config, workdir)


# Every task `config.task` may name. Modules are imported only when their task is used.
TASKS: dict[str, TaskEntry] = {
    "sasrec": TaskEntry(_sasrec_config, _build_sasrec),  # SASRec next-item recommendation
    "lm": TaskEntry(_lm_config, _build_lm),              # causal LM of the LLM backbone
    "calrec": TaskEntry(_calrec_config, _build_calrec),  # CALRec: generator + two towers
    "glm": TaskEntry(_glm_config, _build_glm),           # GLM blank infilling (RecSysLLM)
    "rqvae": TaskEntry(_rqvae_config, _build_rqvae),     # RQ-VAE semantic IDs of items
    "sae": TaskEntry(_sae_config, _build_sae),           # top-k sparse-autoencoder semantic IDs
}


def task_entry(name: str) -> TaskEntry:
  """The `TASKS` entry of `name`; a ValueError naming the known tasks otherwise."""
  if name not in TASKS:
    raise ValueError(f"config.task={name!r} is unknown; choose from {tuple(TASKS)}")
  return TASKS[name]


def build_task(config: ml_collections.ConfigDict, workdir: str | None = None) -> Task:
  """Loads the data the config names and returns the Task that trains on it.

  `workdir` is where a task may keep what it derives from the data (the lm task's trained
  tokenizer); None when re-created for evaluation from a workdir's config.json.
  """
  return task_entry(config.task).build(config, workdir)
