"""Optax optimizer and learning-rate schedule from `config.optimizer`."""
from __future__ import annotations

import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw", "sgd", "adafactor")
SCHEDULES = ("constant", "cosine", "linear")


def make_schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `cfg.learning_rate`, then constant, cosine or linear decay to end_factor."""
  if cfg.schedule not in SCHEDULES:
    raise ValueError(f"config.optimizer.schedule='{cfg.schedule}' is unknown; choose from {SCHEDULES}")
  peak, warmup = cfg.learning_rate, int(cfg.warmup_steps)
  decay_steps = max(total_steps - warmup, 1)
  if cfg.schedule == "constant":
    decay = optax.constant_schedule(peak)
  elif cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_factor)
  else:
    decay = optax.linear_schedule(peak, peak * cfg.end_factor, decay_steps)
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """The configured optimizer, with global-norm clipping in front when `clip_grad_norm` > 0."""
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f"config.optimizer.name='{cfg.name}' is unknown; choose from {OPTIMIZERS}")
  lr = make_schedule(cfg, total_steps)
  if cfg.name == "adam":
    tx = optax.adam(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
  elif cfg.name == "adamw":
    tx = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  elif cfg.name == "sgd":
    tx = optax.sgd(lr, momentum=cfg.b1 or None)
  else:
    tx = optax.adafactor(lr)
  if cfg.clip_grad_norm and cfg.clip_grad_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), tx)
  return tx


def default_config() -> ml_collections.ConfigDict:
  """The `optimizer` block every experiment config starts from."""
  return ml_collections.ConfigDict(dict(
      name="adam",            # adam | adamw | sgd | adafactor. SASRec: adam; LLMs: adamw.
      learning_rate=1e-3,     # peak learning rate. SASRec 1e-3; LLM fine-tuning 1e-5..1e-4.
      b1=0.9,                 # Adam beta1 (SGD momentum).
      b2=0.98,                # Adam beta2. SASRec's reference uses 0.98; LLMs 0.95.
      eps=1e-8,               # Adam epsilon.
      weight_decay=0.0,       # decoupled weight decay (adamw only). LLMs: 0.1.
      schedule="constant",    # constant | cosine | linear, after warm-up.
      warmup_steps=0,         # linear warm-up from 0. LLMs: 1-5% of steps.
      end_factor=0.0,         # final lr as a fraction of the peak (cosine/linear).
      clip_grad_norm=0.0,     # global gradient-norm clip; 0 disables. LLMs: 1.0.
  ))
