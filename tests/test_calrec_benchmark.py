"""benchmarks/calrec.py --stage1_from: which finished runs another target may reuse.

The source runs here are config.json files written as the trainer writes them (ConfigDict
to_json_best_effort), from configs/calrec.py with the variant's overrides set on the ConfigDict
itself, so the benchmark's own parsing of `--config.KEY=VALUE` is checked against typed values.
"""
import importlib.util
import json
import sys

import pytest

from tests.cli_utils import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # calrec.py imports its sibling workdirs.py
sys.path.insert(0, str(REPO))                 # and configs/calrec.py
_spec = importlib.util.spec_from_file_location("calrec_benchmark",
                                               REPO / "benchmarks" / "calrec.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
from configs import calrec as calrec_config  # pylint: disable=g-import-not-at-top,wrong-import-position


def _finished_run(path, config_arg, set_values, wiring=True):
  """A workdir holding what recjax.main writes for configs/calrec.py:config_arg."""
  config = calrec_config.get_config(config_arg)
  for key, value in set_values.items():
    node = config
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  if wiring:  # what recjax.chain passes a later step
    config.init_from.path = "/elsewhere/cpt"
    config.text.tokenizer = "/elsewhere/cpt/tokenizer.model"
    config.lm.tokenizer_vocab_size = 0
  path.mkdir()
  (path / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  (path / "results.json").write_text(json.dumps({"step": 3000}))
  return path


NO_UT = bench.VARIANTS["no_ut"][1]


def test_another_targets_stage1_is_reusable_with_the_same_overrides(tmp_path):
  source = _finished_run(tmp_path / "stage1", "stage1,amazon_office",
                         {"calrec.w_ut": 0.0, "calrec.w_nig": 0.9, "train.progress_bar": False})
  overrides = ["--config.train.progress_bar=False", *NO_UT]
  bench.check_reusable(str(source), "stage1,amazon_scientific", overrides)
  # The same run is not the full variant's stage 1: its loss weights differ.
  with pytest.raises(ValueError, match=r"calrec\.w_nig: 0\.9 there, 0\.8 here.*calrec\.w_ut"):
    bench.check_reusable(str(source), "stage1,amazon_scientific",
                         ["--config.train.progress_bar=False"])


def test_a_run_with_other_training_keys_is_refused(tmp_path):
  source = _finished_run(tmp_path / "stage1", "stage1,amazon_office",
                         {"train.num_steps": 1500, "train.progress_bar": False})
  with pytest.raises(ValueError, match=r"1 keys differ: train\.num_steps: 1500 there, 3000 here"):
    bench.check_reusable(str(source), "stage1,amazon_scientific",
                         ["--config.train.progress_bar=False"])
  # ... unless this target's step is asked for the same (an override after `--`).
  bench.check_reusable(str(source), "stage1,amazon_scientific",
                       ["--config.train.progress_bar=False", "--config.train.num_steps=1500"])


def test_continual_pretraining_is_reusable_and_stage2_is_not(tmp_path):
  cpt = _finished_run(tmp_path / "cpt", "cpt,amazon_office", {}, wiring=False)
  bench.check_reusable(str(cpt), "cpt,amazon_scientific", [])
  stage2 = _finished_run(tmp_path / "stage2", "stage2,amazon_office", {})
  with pytest.raises(ValueError, match="keys differ"):
    bench.check_reusable(str(stage2), "stage1,amazon_scientific", [])


def test_unfinished_source_and_unknown_override_are_named(tmp_path):
  source = _finished_run(tmp_path / "stage1", "stage1,amazon_office", {})
  (source / "results.json").unlink()
  with pytest.raises(ValueError, match=f"{source} holds no finished run"):
    bench.check_reusable(str(source), "stage1,amazon_scientific", [])
  (source / "results.json").write_text("{}")
  with pytest.raises(ValueError, match=r"override '--config.calrec.w_xx=0' names no key"):
    bench.check_reusable(str(source), "stage1,amazon_scientific", ["--config.calrec.w_xx=0"])
