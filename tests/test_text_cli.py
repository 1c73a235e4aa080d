"""`python -m recjax.text`: show and tokenizer train|info, with --help on every command."""
import subprocess
import sys

import pytest

from recjax.text import __main__ as text_cli


@pytest.mark.parametrize("argv,expect", [
    (["--help"], "python -m recjax.text show"),
    (["show", "--help"], "--tokenizer_cache"),
    (["tokenizer", "--help"], "{train,info}"),
    (["tokenizer", "train", "--help"], "--vocab_size"),
    (["tokenizer", "info", "--help"], "--semantic_codes"),
])
def test_help_prints_usage_and_exits_0(argv, expect, capsys):
  assert text_cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "usage" in out.lower() and expect in out


def test_unknown_command_and_missing_flags_fail_with_usage(capsys):
  assert text_cli.main(["nope"]) == 2
  assert "unknown command 'nope'" in capsys.readouterr().err
  assert text_cli.main(["tokenizer", "train"]) == 2
  assert "--dataset" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
  """The real `python -m` entry: show --help, and tokenizer info on the byte tokenizer."""
  proc = subprocess.run([sys.executable, "-m", "recjax.text", "show", "--help"],
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0 and "--workdir" in proc.stdout, proc.stderr[-2000:]
  proc = subprocess.run([sys.executable, "-m", "recjax.text", "tokenizer", "info",
                         "--tokenizer=byte", "--semantic_codes=2", "--text=a [MASK] REC1"],
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "base vocab size: 260" in proc.stdout and "with special tokens: 271" in proc.stdout
  assert "decoded: a [MASK] REC1" in proc.stdout
