"""Leakage-free train/validation/test splits of canonical interaction data.

Two protocols:
- `leave_one_out`: per user, the last item is the test target, the second last the validation
  target, the rest is training data (SASRec, BERT4Rec, P5). Users with fewer than 3 interactions
  have no target and train on their whole sequence, as in the original SASRec code.
- `temporal`: one global time cut-off for validation and one for test, chosen at quantiles of all
  interaction times. Training sees only interactions before the validation cut-off; a user's
  validation (test) target is their first interaction in the validation (test) window.

Evaluation histories never contain the target itself nor anything after it; training sequences
never contain a validation or test target.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from recjax.data.canonical import InteractionData, Sequences


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """Users to evaluate, what the model may see for each, and the item to find."""

  users: np.ndarray  # int32 [n]: user row in the InteractionData
  histories: Sequences  # row i: items visible for users[i], oldest first
  targets: np.ndarray  # int32 [n]: the held-out item

  def __len__(self) -> int:
    return len(self.users)


@dataclasses.dataclass(frozen=True)
class Split:
  """Training sequences and two evaluation sets over one item catalogue."""

  train: Sequences  # row i: training sequence of user train_users[i]
  train_users: np.ndarray  # int32
  valid: EvalSet
  test: EvalSet
  num_items: int
  protocol: str


def leave_one_out(data: InteractionData) -> Split:
  """Last item -> test, second last -> validation, the rest -> train."""
  train, valid_hist, test_hist = [], [], []
  eval_users, valid_targets, test_targets = [], [], []
  for user, seq in enumerate(data.sequences):
    if len(seq) < 3:
      train.append(seq)
      continue
    train.append(seq[:-2])
    eval_users.append(user)
    valid_hist.append(seq[:-2])
    valid_targets.append(seq[-2])
    test_hist.append(seq[:-1])
    test_targets.append(seq[-1])
  users = np.asarray(eval_users, np.int32)
  return Split(
      train=Sequences.from_lists(train),
      train_users=np.arange(data.num_users, dtype=np.int32),
      valid=EvalSet(users, Sequences.from_lists(valid_hist), np.asarray(valid_targets, np.int32)),
      test=EvalSet(users, Sequences.from_lists(test_hist), np.asarray(test_targets, np.int32)),
      num_items=data.num_items,
      protocol="leave_one_out",
  )


def temporal(data: InteractionData, valid_fraction: float = 0.1,
             test_fraction: float = 0.1) -> Split:
  """Global temporal split at the (1 - valid - test) and (1 - test) quantiles of time."""
  if data.timestamps is None:
    raise ValueError(f"split 'temporal' needs timestamps, but dataset '{data.name}' has none; "
                     "use split 'leave_one_out'")
  if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
    raise ValueError(f"temporal split fractions must be positive and sum below 1, got "
                     f"valid_fraction={valid_fraction}, test_fraction={test_fraction}")
  times = data.timestamps
  t_valid = np.quantile(times, 1.0 - valid_fraction - test_fraction)
  t_test = np.quantile(times, 1.0 - test_fraction)
  train, train_users = [], []
  sets = {"valid": ([], [], []), "test": ([], [], [])}
  for user, seq in enumerate(data.sequences):
    t = times[data.sequences.offsets[user]:data.sequences.offsets[user + 1]]
    n_train = int(np.sum(t < t_valid))
    # Sequences are chronological, so the training part is a prefix.
    if n_train:
      train.append(seq[:n_train])
      train_users.append(user)
    for name, lo, hi in (("valid", t_valid, t_test), ("test", t_test, np.inf)):
      in_window = np.flatnonzero((t >= lo) & (t < hi))
      if len(in_window) and in_window[0] > 0:
        users, hists, targets = sets[name]
        users.append(user)
        hists.append(seq[:in_window[0]])
        targets.append(seq[in_window[0]])

  def eval_set(name):
    users, hists, targets = sets[name]
    return EvalSet(np.asarray(users, np.int32), Sequences.from_lists(hists),
                   np.asarray(targets, np.int32))

  return Split(
      train=Sequences.from_lists(train),
      train_users=np.asarray(train_users, np.int32),
      valid=eval_set("valid"),
      test=eval_set("test"),
      num_items=data.num_items,
      protocol="temporal",
  )


SPLITS = {"leave_one_out": leave_one_out, "temporal": temporal}


def make_split(data: InteractionData, protocol: str, **kwargs) -> Split:
  """Splits `data` by the named protocol ('leave_one_out' or 'temporal')."""
  if protocol not in SPLITS:
    raise ValueError(f"unknown split '{protocol}'; choose one of {sorted(SPLITS)}")
  return SPLITS[protocol](data, **kwargs)
