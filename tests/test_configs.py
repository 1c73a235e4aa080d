"""Every shipped experiment config passes the schema check and builds its task on real data."""
import importlib.util
import re

import pytest

from recjax import config as config_lib
from recjax.data.readers import MissingDataError
from recjax.data.registry import list_datasets
from recjax.tasks import TASKS, build_task
from tests.cli_utils import REPO
from tests.datasets import require_data_dir


def _load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


SASREC = _load(REPO / "configs" / "sasrec.py")


def test_every_real_builtin_dataset_has_a_sasrec_preset():
  real = {n for n in list_datasets() if n != "synthetic"}
  assert real == set(SASREC.PRESETS), "configs/sasrec.py PRESETS and the registry disagree"


@pytest.mark.parametrize("name", sorted(SASREC.PRESETS))
def test_sasrec_config_builds_its_task(name):
  root = require_data_dir()
  config = SASREC.get_config(name)
  config.data.root = str(root)
  config_lib.check_config(config)
  if name == "ml-1m":  # only movies.dat/users.dat are shared; ratings.dat is not
    with pytest.raises(MissingDataError, match="ratings.dat"):
      build_task(config)
    return
  task = build_task(config)
  assert task.steps_per_epoch > 0
  assert len(task.split.test) > 0 and task.split.num_items == task.data.num_items


def test_sasrec_ce_variant_is_the_command_measured_in_benchmarks():
  # docs/benchmarks.md, "SASRec under full-ranking CE": the command + attend_to_padding.
  ce = SASREC.get_config("amazon_beauty,ce")
  measured = SASREC.get_config("amazon_beauty")
  for key, value in {"loss.name": "ce", "model.hidden": 64, "model.dropout": 0.1,
                     "train.num_epochs": 20, "train.eval_every_steps": 175,
                     "train.checkpoint_every_steps": 175, "train.best_metric": "ndcg@10",
                     "eval.exclude_history": True, "model.attend_to_padding": True}.items():
    node = measured
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    node[leaf] = value
  assert ce.to_dict() == measured.to_dict()
  config_lib.check_config(ce)
  assert SASREC.get_config("amazon_beauty,bce").to_dict() == SASREC.get_config(
      "amazon_beauty").to_dict()
  with pytest.raises(ValueError, match="bce or ce"):
    SASREC.get_config("amazon_beauty,gbce")


def test_unknown_sasrec_dataset_is_named():
  with pytest.raises(ValueError, match="no_such"):
    SASREC.get_config("no_such")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.py")), ids=lambda p: p.name)
def test_every_config_file_passes_the_schema_check(path):
  module = _load(path)
  config = module.get_config()
  if "python -m recjax.scaling" in (module.__doc__ or ""):  # a sweep of experiment configs
    base, _, arg = config.base.partition(":")
    base_config = _load(REPO / base).get_config(arg)
    for size in config.sizes.values():  # every size is a valid set of model overrides
      point = base_config.copy_and_resolve_references()
      point.model.overrides.update(dict(size))
      config_lib.check_config(point)
    return
  config_lib.check_config(config)
  assert module.__doc__ and "python -m recjax.main" in module.__doc__


def test_every_task_in_the_table_has_a_base_config():
  from recjax.tasks import TASKS  # pylint: disable=g-import-not-at-top
  for name in TASKS:
    config = config_lib.base_config(name)
    assert config.task == name
    config_lib.check_config(config)


def test_unknown_task_names_the_known_ones():
  assert {"sasrec", "lm", "calrec", "glm"} <= set(TASKS)
  with pytest.raises(ValueError, match=r"config.task='nope' is unknown; choose from "
                                       + re.escape(str(tuple(TASKS)))):
    config_lib.base_config("nope")


@pytest.mark.parametrize("task, key, value, message", [
    ("sasrec", "data.max_len", 0, "config.data.max_len=0: must be an integer >= 1"),
    ("sasrec", "train.batch_size", 0, "config.train.batch_size=0: must be an integer >= 1"),
    ("sasrec", "train.grad_accum_steps", 3,
     "config.train.grad_accum_steps=3: must divide train.batch_size=128"),
    ("sasrec", "train.log_every_steps", 0, "config.train.log_every_steps=0"),
    ("sasrec", "optimizer.learning_rate", 0.0,
     "config.optimizer.learning_rate=0.0: must be a number > 0"),
    ("sasrec", "optimizer.b2", 1.0, r"config.optimizer.b2=1.0: must be a number in \[0, 1\)"),
    ("sasrec", "model.dropout", 1.0, "config.model.dropout=1.0"),
    ("sasrec", "model.num_heads", 3, "config.model.num_heads=3: must divide model.hidden=50"),
    ("sasrec", "eval.ks", (0, 10), r"config.eval.ks=\(0, 10\): must be a non-empty tuple"),
    ("sasrec", "data.valid_fraction", 0.0, r"config.data.valid_fraction=0.0: must be a number "
                                           r"in \(0, 1\)"),
    ("sasrec", "mesh.fsdp", 0, "config.mesh.fsdp=0: must be -1 or an integer >= 1"),
    ("sasrec", "mesh.fsdp", -1, "at most one axis may be -1"),
    ("sasrec", "train.best_metric", "ndcg@10", "train.eval_every_steps=0 must divide"),
    ("sasrec", "init_from.step", -1, "config.init_from.step=-1"),
    ("lm", "text.seq_len", 1, "config.text.seq_len=1: must be an integer >= 2"),
    ("lm", "model.lora.rank", -4, "config.model.lora.rank=-4"),
])
def test_out_of_range_values_are_rejected_naming_key_value_and_range(task, key, value, message):
  config = config_lib.base_config(task)
  node = config
  *path, leaf = key.split(".")
  for p in path:
    node = node[p]
  node[leaf] = value
  with pytest.raises(ValueError, match=message):
    config_lib.check_config(config)


def test_every_out_of_range_value_is_listed_at_once():
  config = config_lib.base_config("sasrec")
  config.data.max_len = 0
  config.eval.batch_size = 0
  with pytest.raises(ValueError) as err:
    config_lib.check_config(config)
  assert "data.max_len=0" in str(err.value) and "eval.batch_size=0" in str(err.value)


def test_negatives_are_not_checked_for_full_softmax():
  config = config_lib.base_config("sasrec")
  config.loss.name = "ce"
  config.loss.num_negatives = 0
  config_lib.check_config(config)
