"""`python -m recjax.data` as a user runs it: summary of names, specs and config files; --help."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.cli_utils import REPO, run_main_env


def _data_cli(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", "recjax.data", *args], cwd=REPO,
                        env=run_main_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def shop(tmp_path):
  (tmp_path / "shop").mkdir()
  (tmp_path / "shop" / "events.txt").write_text(
      "a x 10\na x 10\na y 20\na z 30\nb y 5\nb z 6\nb x 7\nc x 1\n")
  return {"name": "shop", "format": "pairs", "dir": "shop",
          "files": {"interactions": "events.txt"}, "columns": ["user", "item", "timestamp"]}


def test_summary_of_a_full_spec(tmp_path, shop):
  for text in (json.dumps(shop), repr(shop)):  # JSON, or a Python dict as configs write it
    run = _data_cli("summary", f"--dataset={text}", f"--root={tmp_path}")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("shop: 3 users, 3 items, 7 interactions")
    assert lines[1] == ("  dropped 1 exact duplicate interactions (same user, item and "
                        "timestamp) of 8; preprocess.drop_duplicates=False keeps them")
    assert lines[2].startswith("leave_one_out: 3 training sequences")


def test_summary_of_a_config_file(tmp_path, shop):
  config = tmp_path / "cfg.py"
  config.write_text(textwrap.dedent(f"""
      import ml_collections
      def get_config(arg=""):
        c = ml_collections.ConfigDict()
        c.data = ml_collections.ConfigDict(dict(dataset={shop!r}, root="/nonexistent",
                                                split=arg or "leave_one_out"))
        return c
      """))
  run = _data_cli("summary", f"--config={config}:temporal", f"--config.data.root={tmp_path}")
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith("shop: 3 users")
  assert "\ntemporal: " in run.stdout  # the config's split protocol


def test_summary_errors(tmp_path, shop):
  run = _data_cli("summary", "--dataset={'name': 'shop', 'format': 'pairs'", f"--root={tmp_path}")
  assert run.returncode == 2 and "neither a dataset name nor a spec" in run.stderr
  run = _data_cli("summary", "--dataset=ml-10k", f"--root={tmp_path}")
  assert run.returncode == 2 and "unknown dataset 'ml-10k'" in run.stderr
  run = _data_cli("summary", f"--dataset={json.dumps({**shop, 'sepp': ' '})}",
                  f"--root={tmp_path}")
  assert run.returncode == 2 and "unknown spec key(s) ['sepp']" in run.stderr
  run = _data_cli("summary")
  assert run.returncode == 2 and "give --dataset=NAME|SPEC or --config=FILE" in run.stderr


@pytest.mark.parametrize("command", ["show", "summary"])
def test_help_prints_usage_and_exits_0(command):
  run = _data_cli(command, "--help")
  assert run.returncode == 0, run.stderr
  assert "--config" in run.stdout and "--dataset" in run.stdout
  assert "Error" not in run.stderr and "Unknown command line flag" not in run.stderr
