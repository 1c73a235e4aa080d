"""Run a multi-step experiment: each step a `recjax.main` run in its own workdir, started from
the step before it.

    python -m recjax.chain --config=configs/calrec.py:amazon_office --workdir=/tmp/calrec_office
    python -m recjax.chain --config=configs/calrec.py:amazon_office --workdir=/tmp/calrec_office \
        --steps=stage1,stage2 -- --config.eval.max_users=200 stage2:--config.train.num_steps=500

The config file's `get_chain(ARGS)` names the steps in order as (name, config argument) pairs
(configs/calrec.py: cpt -> stage1 -> stage2). Step k runs

    python -m recjax.main --config=FILE:ARG_k --workdir=WORKDIR/NAME_k \
        --config.init_from.path=WORKDIR/NAME_{k-1}                         (k > 0)
        --config.text.tokenizer=WORKDIR/NAME_0/tokenizer.model \
        --config.lm.tokenizer_vocab_size=0              (k > 0, when step 0 trained a tokenizer)
        OVERRIDES

so every step reads the same token ids and starts from its predecessor's parameters (optimizer
and data order fresh). The arguments after `--` are overrides for every step, or for one step
with a `NAME:` prefix. A step whose workdir holds `results.json` is finished and skipped; an
interrupted one resumes from its own checkpoint when the same command runs again. Each step's
own evaluation runs at its end; the last step's table is the chain's result. `--dry_run` prints
the commands.
"""
from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "FILE:ARGS; FILE defines get_chain(ARGS).", required=True)
flags.DEFINE_string("workdir", None, "Root directory: one subdirectory per step.", required=True)
flags.DEFINE_list("steps", [], "The steps to run, a subset of the chain's in its order; "
                  "default all. The first one run starts from scratch (or its own init_from).")
flags.DEFINE_bool("dry_run", False, "Print the commands without running them.")


def load_chain(spec: str) -> tuple[str, list[tuple[str, str]]]:
  """configs/X.py[:ARGS] -> (file, [(step name, config argument), ...])."""
  path, _, args = spec.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"--config={spec}: no such file {path}")
  module_spec = importlib.util.spec_from_file_location("chain_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_chain"):
    raise ValueError(f"--config={spec}: {path} defines no get_chain(args), so it is one "
                     "experiment: run it with python -m recjax.main")
  steps = list(module.get_chain(args) if args else module.get_chain())
  names = [name for name, _ in steps]
  if not steps or len(set(names)) != len(names):
    raise ValueError(f"--config={spec}: get_chain gave {names}; it must name at least one "
                     "step, each once")
  return path, steps


def split_overrides(argv: list[str], names: list[str]) -> dict[str, list[str]]:
  """Overrides after `--`: {step name: its overrides}; "" holds those for every step."""
  out: dict[str, list[str]] = {"": []}
  for arg in argv:
    prefix, sep, rest = arg.partition(":")
    if sep and not prefix.startswith("-"):
      if prefix not in names:
        raise ValueError(f"override {arg!r} names step {prefix!r}; the chain's steps are "
                         f"{names}")
      out.setdefault(prefix, []).append(rest)
    elif arg.startswith("--config."):
      out[""].append(arg)
    else:
      raise ValueError(f"override {arg!r}: expected --config.KEY=VALUE or "
                       "STEP:--config.KEY=VALUE")
  return out


def step_commands(path: str, steps: list[tuple[str, str]], workdir: str,
                  overrides: dict[str, list[str]], selected: list[str],
                  dry_run: bool = False) -> list[tuple[str, list[str]]]:
  """(name, argv) of each selected step, in chain order.

  Later steps read the first step's tokenizer when it wrote one (a dry run assumes it will).
  """
  names = [name for name, _ in steps]
  unknown = [s for s in selected if s not in names]
  if unknown:
    raise ValueError(f"--steps: {unknown} are not steps of the chain {names}")
  chosen = [(name, arg) for name, arg in steps if not selected or name in selected]
  commands = []
  for k, (name, arg) in enumerate(chosen):
    argv = [sys.executable, "-m", "recjax.main", f"--config={path}:{arg}",
            f"--workdir={os.path.join(workdir, name)}"]
    if k > 0:
      first, previous = chosen[0][0], chosen[k - 1][0]
      argv.append(f"--config.init_from.path={os.path.join(workdir, previous)}")
      tokenizer = os.path.join(workdir, first, "tokenizer.model")
      if os.path.exists(tokenizer) or dry_run:
        argv += [f"--config.text.tokenizer={tokenizer}", "--config.lm.tokenizer_vocab_size=0"]
    argv += overrides[""] + overrides.get(name, [])
    commands.append((name, argv))
  return commands


def main(argv: list[str]) -> None:
  try:
    path, steps = load_chain(FLAGS.config)
    overrides = split_overrides(argv[1:], [name for name, _ in steps])
    build = lambda: step_commands(path, steps, FLAGS.workdir, overrides, FLAGS.steps,
                                  FLAGS.dry_run)
    names = [name for name, _ in build()]
  except ValueError as e:
    sys.exit(f"error: {e}")
  for k, name in enumerate(names):
    # Rebuilt before each step: its tokenizer flag depends on what the first step wrote.
    _, command = build()[k]
    step_dir = os.path.join(FLAGS.workdir, name)
    header = f"== step {k + 1}/{len(names)} {name}"
    if os.path.exists(os.path.join(step_dir, "results.json")):
      print(f"{header}: finished ({step_dir}/results.json), skipped", flush=True)
      continue
    print(f"{header}: python {shlex.join(command[1:])}", flush=True)
    if FLAGS.dry_run:
      continue
    code = subprocess.call(command)
    if code or not os.path.exists(os.path.join(step_dir, "results.json")):
      sys.exit(f"error: step {name} did not finish (exit status {code}); its workdir "
               f"{step_dir} keeps what it wrote: run the same command to resume")
  if not FLAGS.dry_run:
    print(f"chain finished: {', '.join(names)} in {FLAGS.workdir}")


if __name__ == "__main__":
  app.run(main)
