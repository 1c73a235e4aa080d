"""CALRec next to SASRec on one target domain, and its ablations at equal budget (issue 10 §4).

    RECJAX_DATA_DIR=../shared/data python benchmarks/calrec.py --target=amazon_office \
        --out=/tmp/calrec_bench [--variants=full,stage2_only,no_tt,no_ut,no_contrastive] \
        [--sasrec=ce,bce --sasrec_ce_epochs=60] [--stage1_from=OTHER_OUT] [-- OVERRIDES]

Every run is a normal resumable workdir under --out; a finished one is read, not run again, so
the command can be stopped and restarted, and variants can be added run by run:

    sasrec_ce     configs/sasrec.py:TARGET,ce   (full-catalogue cross-entropy, best validated
                  step) for --sasrec_ce_epochs (60: on amazon_office 20 epochs end at the best
                  validated step, 60 validate best at ~28)
    sasrec_bce    configs/sasrec.py:TARGET      (the original: BCE with one sampled negative)
    full          python -m recjax.chain --config=configs/calrec.py:TARGET: cpt -> stage1 -> stage2
                  (its stage 1's own evaluation of the target is the "stage 1 only" row)
    stage2_only   cpt -> stage2: the target domain alone, from the same continual pre-training
    no_tt         cpt -> stage1 -> stage2 without L_TT (w_tt=0, w_nig=0.9)
    no_ut         cpt -> stage1 -> stage2 without L_UT (w_ut=0, w_nig=0.9)
    no_contrastive  cpt -> stage1 -> stage2 with L_NIG alone (w_nig=1; its dense row scores
                  towers that were never trained to retrieve)

The ablations share `full`'s continual pre-training (a symlink to full/cpt: CPT does not
depend on the CALRec losses) and its tokenizer, so each differs from `full` in one thing. The
weights of the ablations keep the paper's form (1-a-b) L_NIG + a L_TT + b L_UT. SASRec is
evaluated on the same users as CALRec (eval.max_users of configs/calrec.py with the same seed:
recjax.eval.ranking.subset_rows), on the same leave-one-out split, with CALRec's
`eval.exclude_history` (False: history items stay in every ranking).
With `--all_users=dense` (the default; "" skips it) every finished CALRec run (stage 2, and
`full`'s stage 1) and SASRec run is evaluated again on every test user of the target
(`python -m recjax.evaluate --tag=all_users --eval=max_users=0`, CALRec with those evaluators
only; SASRec at its reported best step), and a second table per protocol prints those rows:
500 users leave a standard error of ~0.003 on Recall@1 near 0.005, as large as the ablations'
differences, and the dense mode costs ~1 minute for all ~4,900 amazon_office users.
`--stage1_from=OUT` reuses the continual pre-training and stage-1 runs of an earlier `--out`
(another target's): both train on the same mixture, tokenizer and steps whatever the target,
so a second target costs one stage 2 per variant. Each reused run's config.json must equal
what this target's step would run except the target's own keys (REUSABLE_DIFFERENCES: the
dataset, the evaluated domain, the chain's wiring); its stage-1 rows are evaluated again on
this target (`recjax.evaluate --tag=TARGET --eval=domains=TARGET`, kept apart from the
source's own results).
Extra arguments after `--` go to every CALRec step (e.g. `stage1:--config.train.num_steps=1500`;
see python -m recjax.chain). The table (test split) is printed as markdown.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import workdirs  # benchmarks/workdirs.py

CHAIN = ("cpt", "stage1", "stage2")
# name -> (chain steps, overrides for every CALRec step)
VARIANTS = {
    "full": (CHAIN, []),
    "stage2_only": (("cpt", "stage2"), []),
    "no_tt": (CHAIN, ["--config.calrec.w_tt=0", "--config.calrec.w_nig=0.9"]),
    "no_ut": (CHAIN, ["--config.calrec.w_ut=0", "--config.calrec.w_nig=0.9"]),
    "no_contrastive": (CHAIN, ["--config.calrec.w_tt=0", "--config.calrec.w_ut=0",
                               "--config.calrec.w_nig=1.0"]),
}
SASREC = {"ce": ",ce", "bce": ""}
# Keys in which a reused cpt/stage1 run may differ from this target's: what is evaluated, and
# the paths recjax.chain wires in (the reused chain's own).
REUSABLE_DIFFERENCES = ("data.dataset.", "eval.domains", "init_from.path", "text.tokenizer",
                        "lm.tokenizer_vocab_size")
METRICS = ("recall@1", "recall@5", "recall@10", "ndcg@10")
MODES = ("dense", "bm25", "constrained")
PROTOCOLS = {"kept": False, "removed": True}  # history items in the ranking -> exclude_history


def _calrec_results(workdir: str) -> dict[str, float]:
  """results.json, completed by the latest `python -m recjax.evaluate` of the same step (an
  evaluation written before the no_history/ keys existed is re-run that way)."""
  results = workdirs.results(workdir)
  extra = os.path.join(workdir, f"eval_step{int(results['step'])}_test.json")
  if os.path.exists(extra):
    with open(extra, encoding="utf-8") as f:
      results = {**{f"test/{k}": v for k, v in json.load(f).items()}, **results}
  return results


def calrec_cells(results: dict[str, float], mode: str, protocol: str) -> list[float] | None:
  """test/<mode>/[<domain>/]<protocol><metric> of a CALRec run (one evaluated domain)."""
  out = []
  for metric in METRICS:
    pattern = re.compile(rf"test/{mode}/(?:(?!no_history/)[^/]+/)?{protocol}{re.escape(metric)}")
    keys = [k for k in results if pattern.fullmatch(k)]
    if len(keys) > 1:
      raise ValueError(f"several evaluated domains report {mode} {metric}: {keys}")
    if not keys:
      return None
    out.append(float(results[keys[0]]))
  return out


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in d.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def _with_overrides(flat: dict, overrides: list[str], where: str) -> dict:
  """`flat` with each --config.KEY=VALUE applied (VALUE parsed as the key's default's type)."""
  flat = dict(flat)
  for arg in overrides:
    key, sep, value = arg.removeprefix("--config.").partition("=")
    if not sep or key not in flat:
      raise ValueError(f"{where}: override {arg!r} names no key of the config")
    old = flat[key]
    if isinstance(old, bool):
      flat[key] = value.lower() in ("1", "true")
    elif isinstance(old, (int, float)):
      flat[key] = type(old)(value)
    elif isinstance(old, (list, dict)) or old is None:
      flat[key] = json.loads(value)
    else:
      flat[key] = value
  return flat


def check_reusable(source: str, config_arg: str, overrides: list[str]) -> None:
  """Raises ValueError unless the finished run in `source` trained what
  `configs/calrec.py:config_arg` with `overrides` would train (REUSABLE_DIFFERENCES aside)."""
  from configs import calrec as calrec_config  # pylint: disable=g-import-not-at-top
  path = os.path.join(source, "config.json")
  if not os.path.exists(os.path.join(source, "results.json")):
    raise ValueError(f"--stage1_from: {source} holds no finished run (no results.json)")
  with open(path, encoding="utf-8") as f:
    ran = _flat(json.load(f))
  wanted = _flat(json.loads(calrec_config.get_config(config_arg).to_json()))
  wanted = _with_overrides(wanted, overrides, f"configs/calrec.py:{config_arg}")
  differ = sorted(k for k in set(ran) | set(wanted)
                  if ran.get(k, "<absent>") != wanted.get(k, "<absent>")
                  and not k.startswith(REUSABLE_DIFFERENCES))
  if differ:
    shown = ", ".join(f"{k}: {ran.get(k, '<absent>')!r} there, {wanted.get(k, '<absent>')!r} "
                      "here" for k in differ[:5])
    raise ValueError(f"--stage1_from: {path} did not train what configs/calrec.py:{config_arg} "
                     f"would ({len(differ)} keys differ: {shown})")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--target", default="amazon_office")
  ap.add_argument("--out", required=True)
  ap.add_argument("--variants", default=",".join(VARIANTS))
  ap.add_argument("--sasrec", default="ce,bce")
  ap.add_argument("--sasrec_ce_epochs", type=int, default=60)
  ap.add_argument("--stage1_from", default="",
                  help="an earlier --out whose cpt and stage1 runs this target reuses")
  ap.add_argument("--all_users", default="dense",
                  help="CALRec modes evaluated again on every test user ('' skips)")
  args, rest = ap.parse_known_args()
  extra = [a for a in rest if a != "--"]
  variants = [v for v in args.variants.split(",") if v]
  unknown = [v for v in variants if v not in VARIANTS]
  unknown += [s for s in args.sasrec.split(",") if s and s not in SASREC]
  if unknown:
    sys.exit(f"error: unknown variants {unknown}; choose from {list(VARIANTS)} and "
             f"--sasrec from {list(SASREC)}")
  sys.path.insert(0, os.getcwd())
  from configs import calrec as calrec_config  # pylint: disable=g-import-not-at-top
  from recjax import chain as chain_lib  # pylint: disable=g-import-not-at-top
  calrec_eval = calrec_config.get_config(f"stage2,{args.target}").eval
  max_users = int(calrec_eval.max_users)
  if calrec_eval.exclude_history:
    sys.exit("error: configs/calrec.py sets eval.exclude_history=True; this benchmark reads "
             "both protocols from CALRec's history-kept evaluation (its no_history/ keys)")

  # SASRec under both protocols, each validated (best step) under its own.
  sasrec_dirs = {}
  for loss in [s for s in args.sasrec.split(",") if s]:
    for protocol, exclude in PROTOCOLS.items():
      workdir = sasrec_dirs[loss, protocol] = os.path.join(
          args.out, f"sasrec_{loss}" + ("_no_history" if exclude else ""))
      if not os.path.exists(os.path.join(workdir, "results.json")):
        workdirs.run([sys.executable, "-m", "recjax.main",
              f"--config=configs/sasrec.py:{args.target}{SASREC[loss]}",
              f"--workdir={workdir}", "--config.train.progress_bar=False",
              f"--config.eval.max_users={max_users}", f"--config.eval.exclude_history={exclude}",
              *([f"--config.train.num_epochs={args.sasrec_ce_epochs}"] if loss == "ce" else [])])

  def chain(workdir: str, steps, overrides) -> None:
    workdirs.run([sys.executable, "-m", "recjax.chain",
                  f"--config=configs/calrec.py:{args.target}", f"--workdir={workdir}",
                  f"--steps={','.join(steps)}", "--", "--config.train.progress_bar=False",
                  *overrides, *extra])

  try:
    extra_by_step = chain_lib.split_overrides(extra, list(CHAIN))
  except ValueError as e:
    sys.exit(f"error: {e}")
  variant_dirs = {}
  for name in variants:
    steps, overrides = VARIANTS[name]
    workdir = variant_dirs[name] = os.path.join(args.out, name)
    os.makedirs(workdir, exist_ok=True)
    if args.stage1_from:
      for step in steps[:-1]:  # every step but stage 2 trains the same whatever the target
        # The variants share full's continual pre-training, run without their overrides.
        owner, own = ("full", []) if step == "cpt" else (name, overrides)
        source = os.path.abspath(os.path.join(args.stage1_from, owner, step))
        step_overrides = (["--config.train.progress_bar=False", *own, *extra_by_step[""],
                           *extra_by_step.get(step, [])])
        try:
          check_reusable(source, f"{step},{args.target}", step_overrides)
        except ValueError as e:
          sys.exit(f"error: {e}")
        link = os.path.join(workdir, step)
        if not os.path.lexists(link):
          os.symlink(source, link)
        elif os.path.realpath(link) != os.path.realpath(source):
          sys.exit(f"error: {link} exists and is not {source}")
    elif name != "full":
      shared_cpt = os.path.join(args.out, "full", "cpt")
      if not os.path.exists(os.path.join(shared_cpt, "results.json")):
        chain(os.path.join(args.out, "full"), ["cpt"], [])
      if not os.path.lexists(os.path.join(workdir, "cpt")):
        os.symlink(os.path.abspath(shared_cpt), os.path.join(workdir, "cpt"))
    chain(workdir, steps, overrides)

  # pylint: disable=g-import-not-at-top
  from recjax.tasks import build_task
  from recjax.workdir import read_config
  # pylint: enable=g-import-not-at-top
  all_modes = [m for m in args.all_users.split(",") if m]
  if [m for m in all_modes if m not in MODES]:
    sys.exit(f"error: --all_users={args.all_users!r}: choose from {list(MODES)}")
  domain = [f"--eval=domains={args.target}"]
  all_users = ["--eval=max_users=0"]
  tables = [(max_users, _calrec_results, workdirs.results,
             lambda w: evaluated(w, args.target, domain))]
  if all_modes:
    modes = ["--eval=evaluators=" + ",".join(all_modes)]
    tables.append((0, lambda w: evaluated(w, "all_users", all_users + modes),
                   lambda w: evaluated(w, "all_users", all_users),
                   lambda w: evaluated(w, f"{args.target}_all_users", all_users + modes + domain)))
  for users, calrec_results, sasrec_results, reused_results in tables:
    for protocol, exclude in PROTOCOLS.items():
      rows: list[tuple[str, str, list[float]]] = []
      for (loss, p), workdir in sasrec_dirs.items():
        if p == protocol:
          results = sasrec_results(workdir)
          rows.append((f"SASRec {loss.upper()}", "-",
                       [float(results[f"test/{m}"]) for m in METRICS]))
          popularity_dir = workdir
      if sasrec_dirs:
        config = read_config(popularity_dir)
        config.eval.max_users = users
        popularity = build_task(config).baselines("test")["Popularity"]
        rows.append(("Popularity", "-", [float(popularity[m]) for m in METRICS]))
      for name, workdir in variant_dirs.items():
        runs = [(name, "stage2")]
        if name == "full":
          runs.insert(0, ("stage1_only", "stage1"))
        for label, step in runs:
          reused = bool(args.stage1_from) and step == "stage1"  # another target's run
          results = (reused_results if reused else calrec_results)(os.path.join(workdir, step))
          for mode in MODES:
            cells = calrec_cells(results, mode, "no_history/" if exclude else "")
            if cells is not None:
              rows.append((f"CALRec {label}", mode, cells))
      print(f"\n{args.target}, test split, {users or 'all'} users (the same for every row), "
            f"full-catalogue ranking, history items {protocol}:\n")
      print("| model | retrieval | " + " | ".join(METRICS) + " |")
      print("|---|---|" + "---|" * len(METRICS))
      for label, mode, cells in rows:
        print(f"| {label} | {mode} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")


def evaluated(workdir: str, tag: str, eval_args: list[str]) -> dict[str, float]:
  """test/ metrics of `workdir`'s reported step evaluated with `eval_args` (once, then read from
  eval_step{N}_test.{tag}.json)."""
  results = workdirs.results(workdir)
  step = int(results.get("best_step", results["step"]))
  path = os.path.join(workdir, f"eval_step{step}_test.{tag}.json")
  if not os.path.exists(path):
    workdirs.run([sys.executable, "-m", "recjax.evaluate", f"--workdir={workdir}",
                  f"--step={step}", "--split=test", f"--tag={tag}", *eval_args])
  with open(path, encoding="utf-8") as f:
    return {f"test/{k}": v for k, v in json.load(f).items()}


if __name__ == "__main__":
  main()
