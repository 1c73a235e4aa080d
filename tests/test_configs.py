"""Every shipped experiment config passes the schema check and builds its task on real data."""
import importlib.util

import pytest

from recjax import config as config_lib
from recjax.data.readers import MissingDataError
from recjax.tasks import build_task
from tests.cli_utils import REPO
from tests.datasets import require_data_dir


def _load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


SASREC = _load(REPO / "configs" / "sasrec.py")


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


def test_unknown_sasrec_dataset_is_named():
  with pytest.raises(ValueError, match="no_such"):
    SASREC.get_config("no_such")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.py")), ids=lambda p: p.name)
def test_every_config_file_passes_the_schema_check(path):
  module = _load(path)
  config = module.get_config()
  config_lib.check_config(config)
  assert module.__doc__ and "python -m recjax.main" in module.__doc__
