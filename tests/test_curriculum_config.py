"""configs/curriculum.py: its stages, its chain, and that the lm schema has every knob."""
import importlib.util
import subprocess
import sys

import pytest

from recjax import config as config_lib
from recjax.curriculum import corpora as C
from tests.cli_utils import REPO, run_main_env


def _load():
  spec = importlib.util.spec_from_file_location("curriculum_config",
                                                REPO / "configs" / "curriculum.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


CONFIG = _load()


@pytest.mark.parametrize("args", ["synthetic", "amazon_games6k", "grounding",
                                  "histories,amazon_games6k"])
def test_every_variant_passes_the_schema_and_trains_on_the_curriculum(args):
  config = CONFIG.get_config(args)
  config_lib.check_config(config)
  assert C.enabled(config) and "curriculum" in config.eval.corpora
  rates = config.curriculum.rates
  stage = args.split(",")[0]
  if stage == "grounding":
    assert rates.item_text > 0 and rates.rules > 0 and rates.walks == rates.histories == 0
  elif stage == "histories":
    assert rates.walks > 0 and rates.histories > 0 and rates.item_text == rates.rules == 0
    assert config.data.dataset.name == "amazon_games6k"
  else:
    assert all(rates[m] > 0 for m in ("item_text", "rules", "walks", "histories"))


def test_the_chain_runs_grounding_then_histories_from_its_parameters(tmp_path):
  assert CONFIG.get_chain("amazon_games6k") == [("grounding", "grounding,amazon_games6k"),
                                                ("histories", "histories,amazon_games6k")]
  out = subprocess.run([sys.executable, "-m", "recjax.chain", "--config=configs/curriculum.py",
                        f"--workdir={tmp_path}", "--dry_run"], env=run_main_env(), cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = [l for l in out.stdout.splitlines() if "recjax.main" in l]
  assert len(lines) == 2 and "curriculum.py:grounding,synthetic" in lines[0]
  assert f"--config.init_from.path={tmp_path}/grounding" in lines[1]
  assert "tokenizer.model" in lines[1]


def test_a_bad_argument_is_named():
  with pytest.raises(ValueError, match="grounding"):
    CONFIG.get_config("amazon_games6k,oops")


def test_curriculum_is_off_by_default():
  config = config_lib.base_config("lm")
  assert not C.enabled(config)
  assert set(config.curriculum.rates) == set(C.MODALITIES)
