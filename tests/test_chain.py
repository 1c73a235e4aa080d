"""recjax.chain: a multi-step experiment (CPT -> CALRec) run as real recjax.main subprocesses."""
import json
import subprocess
import sys

import pytest

from tests.cli_utils import REPO, run_main_env

TINY = ["--config.train.num_steps=3", "--config.train.checkpoint_every_steps=3",
        "--config.train.progress_bar=False", "calrec:--config.eval.max_users=16",
        "calrec:--config.eval.evaluators=dense"]


def _chain(*args, timeout=900):
  return subprocess.run([sys.executable, "-m", "recjax.chain", *args], cwd=REPO,
                        env=run_main_env(), capture_output=True, text=True, timeout=timeout)


def test_dry_run_chains_init_from_tokenizer_and_step_overrides(tmp_path):
  out = _chain("--config=configs/calrec.py:amazon_office", f"--workdir={tmp_path}", "--dry_run",
               "--", "--config.eval.max_users=50", "stage2:--config.train.num_steps=5")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert [line.split(":")[0] for line in lines] == [
      "== step 1/3 cpt", "== step 2/3 stage1", "== step 3/3 stage2"]
  cpt, stage1, stage2 = lines
  assert "--config=configs/calrec.py:cpt,amazon_office" in cpt and "--config.init_from" not in cpt
  assert f"--config.init_from.path={tmp_path}/cpt" in stage1
  assert f"--config.init_from.path={tmp_path}/stage1" in stage2
  for line in (stage1, stage2):
    assert f"--config.text.tokenizer={tmp_path}/cpt/tokenizer.model" in line
    assert "--config.lm.tokenizer_vocab_size=0" in line
  assert all("--config.eval.max_users=50" in line for line in lines)
  assert "num_steps=5" in stage2 and "num_steps" not in stage1
  assert not list(tmp_path.iterdir())  # a dry run writes nothing

  out = _chain("--config=configs/calrec.py:amazon_office", f"--workdir={tmp_path}", "--dry_run",
               "--steps=stage1,stage2")
  first = out.stdout.splitlines()[0]
  assert "stage1" in first and "--config.init_from" not in first and "--config.text.tokenizer" not in first


@pytest.mark.parametrize("args, message", [
    (["--config=configs/sasrec.py"], "defines no get_chain"),
    (["--config=configs/nope.py"], "no such file"),
    (["--config=configs/calrec.py", "--steps=stage9"], "not steps of the chain"),
    (["--config=configs/calrec.py", "--", "stage9:--config.a=1"], "names step 'stage9'"),
    (["--config=configs/calrec.py", "--", "train.num_steps=3"], "expected --config.KEY=VALUE"),
])
def test_bad_chain_arguments_are_one_error_line(tmp_path, args, message):
  out = _chain(*args[:1], f"--workdir={tmp_path}", "--dry_run", *args[1:], timeout=120)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith("error: ")
  assert message in out.stderr


def test_cpt_then_calrec_runs_resumes_and_skips_finished_steps(tmp_path):
  args = ["--config=configs/calrec.py:synthetic", f"--workdir={tmp_path}", "--", *TINY]
  out = _chain(*args)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "chain finished: cpt, calrec" in out.stdout
  # The CALRec step started from the CPT step's parameters and reads its tokenizer.
  assert f"initialised the parameters from {tmp_path}/cpt at step 3" in out.stdout
  assert f"tokenizer {tmp_path}/cpt/tokenizer.model" in out.stdout
  assert not (tmp_path / "calrec" / "tokenizer.model").exists()
  cpt = json.loads((tmp_path / "cpt" / "results.json").read_text())
  calrec = json.loads((tmp_path / "calrec" / "results.json").read_text())
  assert cpt["step"] == calrec["step"] == 3
  assert "test/dense/recall@10" in calrec and "test/histories/ppl" in cpt

  # Re-run: both steps are finished and skipped; nothing trains again.
  before = (tmp_path / "calrec" / "metrics.jsonl").read_text()
  again = _chain(*args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("skipped") == 2
  assert (tmp_path / "calrec" / "metrics.jsonl").read_text() == before

  # A step that did not finish (no results.json) is run again from its own workdir (what the
  # rerun of a workdir killed before its results does: tests/test_trainer.py).
  (tmp_path / "calrec" / "results.json").unlink()
  third = _chain(*args[:2], "--dry_run", *args[2:])
  assert third.returncode == 0, third.stderr[-3000:]
  assert "== step 1/2 cpt: finished" in third.stdout
  assert f"== step 2/2 calrec: python -m recjax.main --config=configs/calrec.py:synthetic " \
         f"--workdir={tmp_path}/calrec" in third.stdout
