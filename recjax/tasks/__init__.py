"""Model families as trainer Tasks, built from an experiment config."""
from __future__ import annotations

import ml_collections


def build_task(config: ml_collections.ConfigDict, workdir: str | None = None):
  """Loads the data the config names and returns the Task that trains on it.

  `workdir` is where a task may keep what it derives from the data (the lm task's trained
  tokenizer); None when re-created for evaluation from a workdir's config.json.
  """
  if config.task == "sasrec":
    from recjax.data import registry, splits  # pylint: disable=g-import-not-at-top
    from recjax.tasks.sasrec import SASRecTask  # pylint: disable=g-import-not-at-top
    data = registry.load_dataset(config.data.dataset.to_dict(), config.data.root or None)
    kwargs = {}
    if config.data.split == "temporal":
      kwargs = dict(valid_fraction=config.data.valid_fraction,
                    test_fraction=config.data.test_fraction)
    split = splits.make_split(data, config.data.split, **kwargs)
    return SASRecTask(config, data, split)
  if config.task == "lm":
    from recjax.tasks.lm import LMTask  # pylint: disable=g-import-not-at-top
    return LMTask(config, workdir)
  raise ValueError(f"config.task='{config.task}' is unknown; choose from ('sasrec', 'lm')")
