"""Ahead-of-time compilation of an experiment's train step for a TPU topology, on any host.

    pip install -e ".[tpu]"   # libtpu: the TPU compiler (no TPU needed)
    JAX_PLATFORMS=cpu python -m recjax.compile --config=configs/lm.py --topology=v5p-8 \
        --config.mesh.data=1 --config.mesh.fsdp=4

(docs/scaling.md has the flags of 1B and 8B backbones and the table they produced.)

As MaxText's `train_compile.py`: the experiment's real Task, model, optimizer, shardings and
jitted train step (`recjax.train.trainer.make_train_step`) are lowered with abstract arrays on
the TPU devices of `--topology` (`jax.experimental.topologies`) and compiled by libtpu. Nothing
is allocated or run. Printed: per-chip memory of the compiled step (arguments, temporaries,
outputs, generated code) against the chip's HBM, XLA's FLOP and byte counts, the collectives in
the compiled HLO, and a roofline step time and MFU estimate from the chip's published peak
bf16 FLOP/s, HBM bandwidth and ICI bandwidth. The eval forward pass (the task's loss without
gradients, on a train-shaped batch) is compiled and measured too. Exits non-zero when the
train step does not fit, saying by how much and which knobs move it.

`--topology` takes Cloud TPU names (v4-8, v5p-16, v5e-16, v6e-64: for v4 and v5p the number
counts TensorCores, two per chip; for v5e and v6e it counts chips) or libtpu's own form
(`v5p:2x2x2`, `v6e:4x4`). One JAX device is one chip (megacore on v4/v5p).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections import config_flags

from recjax import config as config_lib
from recjax.models import llm
from recjax.tasks import build_task
from recjax.train import optim
from recjax.train import sharding as shard_lib
from recjax.train import trainer

# Other processes of this host may hold libtpu's lock file; compiling needs no TPU. Set before
# any JAX backend starts.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures of a TPU generation (Cloud TPU system architecture pages)."""

  name: str
  libtpu_name: str        # the generation's name in libtpu topology strings
  peak_bf16_flops: float  # FLOP/s
  hbm_bytes: float        # HBM capacity
  hbm_bandwidth: float    # bytes/s
  ici_bandwidth: float | None  # bidirectional inter-chip interconnect, bytes/s (None: unpublished)
  cores_in_name: int      # TensorCores per chip counted by the Cloud name (v5p-16 = 8 chips)
  dims: int               # torus dimensions (3: v4/v5p, 2: v5e/v6e)


CHIPS = {
    "v4": Chip("TPU v4", "v4", 275e12, 32 * GiB, 1200e9, None, 2, 3),
    "v5e": Chip("TPU v5e", "v5e", 197e12, 16 * GiB, 819e9, 400e9, 1, 2),
    "v5p": Chip("TPU v5p", "v5p", 459e12, 95 * GiB, 2765e9, 1200e9, 2, 3),
    "v6e": Chip("TPU v6e", "v6e", 918e12, 32 * GiB, 1638e9, 800e9, 1, 2),
}

# Chips -> slice shape, as Cloud TPU and MaxText's accelerator_to_spec_map lay them out.
_SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
              128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16),
              2048: (8, 16, 16), 4096: (16, 16, 16)}
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8),
              128: (8, 16), 256: (16, 16)}

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


@dataclasses.dataclass(frozen=True)
class Topology:
  """A TPU slice: its chip generation and libtpu topology string."""

  chip: Chip
  shape: tuple[int, ...]

  @property
  def name(self) -> str:
    return f"{self.chip.libtpu_name}:{'x'.join(map(str, self.shape))}"

  @property
  def num_chips(self) -> int:
    return math.prod(self.shape)


def parse_topology(name: str) -> Topology:
  """`v5p-16` (Cloud name) or `v5p:2x2x2` (libtpu form) -> Topology; ValueError if unknown."""
  known = ", ".join(f"{k}-N" for k in CHIPS)
  m = re.fullmatch(r"(v4|v5e|v5p|v6e)(?:-(\d+)|:(\d+(?:x\d+)*))", name.strip().lower())
  if not m:
    raise ValueError(f"--topology={name!r} is not a TPU topology; use {known} (e.g. v5p-16) "
                     "or GEN:AxBxC (e.g. v5p:2x2x2)")
  chip = CHIPS[m.group(1)]
  if m.group(3):
    shape = tuple(int(s) for s in m.group(3).split("x"))
    if len(shape) != chip.dims or min(shape) < 1:
      raise ValueError(f"--topology={name!r}: {chip.name} slices have {chip.dims} dimensions")
    return Topology(chip, shape)
  count = int(m.group(2))
  shapes = _SHAPES_3D if chip.dims == 3 else _SHAPES_2D
  chips, rem = divmod(count, chip.cores_in_name)
  if rem or chips not in shapes:
    sizes = ", ".join(f"{m.group(1)}-{c * chip.cores_in_name}" for c in shapes)
    raise ValueError(f"--topology={name!r} is not a known {chip.name} slice; known: {sizes} "
                     f"(or give the shape: {m.group(1)}:{'x'.join(['A', 'B', 'C'][:chip.dims])})")
  return Topology(chip, shapes[chips])


def topology_devices(topology: Topology) -> list[Any]:
  """Compile-only TPU devices of the slice (needs libtpu; no TPU attached)."""
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise RuntimeError("AOT compilation for TPUs needs libtpu: pip install -e '.[tpu]'") from e
  kwargs = {}
  if topology.chip.cores_in_name == 2:
    kwargs["chip_config_name"] = "megacore"  # one JAX device per chip, as on real v4/v5p VMs
  if topology.chip.dims == 3 and min(topology.shape) >= 4:
    kwargs["wrap"] = (True, True, True)  # full cubes are tori
  try:
    desc = topologies.get_topology_desc(topology.name, "tpu", **kwargs)
  except Exception as e:  # libtpu's own message says what is wrong with the shape
    raise ValueError(f"libtpu rejected topology {topology.name}: {e}") from e
  return list(desc.devices)


# ------------------------------------------------------------------------------------------------
# Abstract state and batch of the real experiment.
# ------------------------------------------------------------------------------------------------


def abstract_train_state(config, task, mesh):
  """`trainer.create_train_state` without allocating: the state holds ShapeDtypeStructs."""
  tx = optim.make_optimizer(config.optimizer, trainer.total_steps(config, task))

  def create():
    model = task.build_model(nnx.Rngs(params=config.seed))
    return model, nnx.Optimizer(model, tx, wrt=task.trainable)

  graphdef, abstract = nnx.split(nnx.eval_shape(create))
  shardings = shard_lib.state_shardings(abstract, mesh, config.sharding.logical_axis_rules)
  state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                       abstract, shardings)
  return trainer.TrainState(graphdef=graphdef, state=state, shardings=shardings, step=0)


def abstract_batch(task, mesh) -> dict[str, Any]:
  """Shapes and dtypes of one global training batch, from the task's real pipeline."""
  batch = next(iter(task.train_data(0, 1)))
  sharding = shard_lib.batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct(np.shape(v), jax.dtypes.canonicalize_dtype(np.asarray(v).dtype),
                                  sharding=sharding) for k, v in batch.items()}


def make_eval_step(task, train_state, mesh):
  """Jitted forward loss (no gradients) of the model on a batch: what evaluation costs."""
  graphdef = train_state.graphdef

  def eval_fn(state, batch):
    model, _ = nnx.merge(graphdef, state)
    model.eval()
    loss_sum, weight, _ = task.loss(model, batch, nnx.Rngs(dropout=0))
    return loss_sum, weight

  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(eval_fn, in_shardings=(train_state.shardings, shard_lib.batch_sharding(mesh)),
                 out_shardings=(replicated, replicated))


# ------------------------------------------------------------------------------------------------
# What the compiled executable says.
# ------------------------------------------------------------------------------------------------


class DoesNotFitError(ValueError):
  """The compiled step needs more HBM than the chip has."""


@dataclasses.dataclass
class Collective:
  count: int = 0
  bytes: float = 0.0     # sum over ops of their largest array (operand or result), per chip
  ici_bytes: float = 0.0  # ring estimate of the bytes each chip sends


@dataclasses.dataclass
class StepReport:
  """Per-chip figures of one compiled step."""

  name: str
  lower_seconds: float
  compile_seconds: float
  argument_bytes: int
  output_bytes: int
  alias_bytes: int       # outputs that reuse donated argument buffers
  temp_bytes: int
  code_bytes: int
  flops: float
  bytes_accessed: float
  collectives: dict[str, Collective]
  hlo: str = dataclasses.field(default="", repr=False)  # the compiled, partitioned HLO text
  model_flops: float | None = None  # per chip, analytic (LM tasks); None: not known

  @property
  def total_bytes(self) -> int:
    """Peak HBM the step needs: live arguments, outputs not aliased to them, temporaries, code."""
    return (self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes +
            self.code_bytes)


_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "f8e4m3fn": 1, "f8e5m2": 1}
_ARRAY = re.compile(r"\b(" + "|".join(_DTYPE_BYTES) + r")\[([\d,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s+->\s+.*\{\s*$")
_OP = re.compile(r"=\s*(?:\([^=]*?\)|\S+)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")


def _group_size(line: str, num_devices: int) -> int:
  """Devices in each replica group of a collective's HLO line (all of them if not stated)."""
  m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)  # mesh[...] {axes}
  if m:
    sizes = dict(re.findall(r"'([^']+)'=(\d+)", m.group(1)))
    return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'", m.group(2)) if a in sizes)
  m = re.search(r"replica_groups=\[(\d+),(\d+)\]", line)  # iota form [groups,size]<=[...]
  if m:
    return int(m.group(2))
  m = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
  if m:
    return len(m.group(1).split(","))
  return num_devices


def count_collectives(hlo_text: str, num_devices: int) -> dict[str, Collective]:
  """Collectives in compiled HLO text: op count, bytes and a ring estimate of bytes sent.

  Static counts: an op inside a loop body (scanned layers, gradient accumulation) counts once
  although it runs once per iteration. libtpu writes a reduce-scatter as an all-reduce followed
  by a dynamic slice inside an `all-reduce-scatter` fusion computation: it counts as the
  reduce-scatter it is.
  """
  out = {name: Collective() for name in COLLECTIVES}
  computation = ""
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      computation = header.group(1)
      continue
    m = _OP.search(line)
    if not m:
      continue
    kind = m.group(1)
    if kind == "all-reduce" and computation.startswith("all-reduce-scatter"):
      kind = "reduce-scatter"
    sizes = [math.prod(int(d) for d in dims.split(",") if d) * _DTYPE_BYTES[dt]
             for dt, dims in _ARRAY.findall(line)]
    size = max(sizes, default=0)
    n = _group_size(line, num_devices)
    share = (n - 1) / n if n > 1 else 0.0
    c = out[kind]
    c.count += 1
    c.bytes += size
    # Ring algorithms: all-reduce = reduce-scatter + all-gather; permutes send their buffer.
    c.ici_bytes += size * (2 * share if kind == "all-reduce" else
                           1.0 if kind == "collective-permute" else share)
  return out


def analyse(name: str, jitted, args, num_devices: int) -> StepReport:
  """Lowers and compiles `jitted` on `args` (abstract, sharded) and reads the executable."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  lowered_at = time.perf_counter()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    # libtpu refuses programs whose temporaries exceed the chip's HBM.
    m = re.search(r"RESOURCE_EXHAUSTED: (.*?exceeds available HBM(?: \([\d.]+\w*\))?)", str(e))
    if m:
      raise DoesNotFitError(f"the {name} does not fit: {m.group(1)}. Knobs that lower it: " +
                            "; ".join(KNOBS)) from e
    raise
  done = time.perf_counter()
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0]
  cost = cost or {}
  hlo = compiled.as_text()
  return StepReport(
      name=name, lower_seconds=lowered_at - start, compile_seconds=done - lowered_at,
      argument_bytes=int(mem.argument_size_in_bytes), output_bytes=int(mem.output_size_in_bytes),
      alias_bytes=int(mem.alias_size_in_bytes), temp_bytes=int(mem.temp_size_in_bytes),
      code_bytes=int(mem.generated_code_size_in_bytes), flops=float(cost.get("flops", 0.0)),
      bytes_accessed=float(cost.get("bytes accessed", 0.0)),
      collectives=count_collectives(hlo, num_devices), hlo=hlo)


@dataclasses.dataclass
class Roofline:
  """Estimated step time: the slowest of compute, HBM traffic and ICI traffic (full overlap)."""

  compute_s: float
  hbm_s: float
  ici_s: float | None
  step_s: float
  mfu: float


def lm_model_flops(cfg: llm.LLMConfig, batch: int, seq: int, train: bool) -> float:
  """FLOPs of one step of the LLM as MFU counts them (MaxText's convention), whole batch.

  Matmuls: 2 x weights x tokens forward, 3 times that with the backward pass; causal attention:
  QK^T and PV over half of the seq x seq scores. Embedding lookups are no matmuls; remat
  recomputation is not model FLOPs.
  """
  d, h = cfg.hidden_size, cfg.head_dim
  per_layer = d * h * (2 * cfg.num_heads + 2 * cfg.num_kv_heads) + 3 * d * cfg.mlp_dim
  weights = cfg.num_layers * per_layer + d * cfg.vocab_size
  attention = 2 * 2 * batch * seq * seq * cfg.num_heads * h * cfg.num_layers / 2
  return (3 if train else 1) * (2 * weights * batch * seq + attention)


def roofline(report: StepReport, chip: Chip) -> Roofline:
  flops = report.model_flops if report.model_flops is not None else report.flops
  compute = flops / chip.peak_bf16_flops
  hbm = report.bytes_accessed / chip.hbm_bandwidth
  ici = None
  if chip.ici_bandwidth:
    ici = sum(c.ici_bytes for c in report.collectives.values()) / chip.ici_bandwidth
  step = max(compute, hbm, ici or 0.0)
  return Roofline(compute, hbm, ici, step, compute / step if step else 0.0)


def _gib(n: float) -> str:
  return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / 2**20:.1f} MiB"


def format_report(report: StepReport, chip: Chip, tokens: int | None) -> str:
  """The printed summary of one compiled step."""
  r = roofline(report, chip)
  lines = [
      f"{report.name}: lowered in {report.lower_seconds:.1f} s, compiled in "
      f"{report.compile_seconds:.1f} s",
      "  memory per chip: "
      f"arguments {_gib(report.argument_bytes)}, temporaries {_gib(report.temp_bytes)}, "
      f"outputs {_gib(report.output_bytes)} ({_gib(report.alias_bytes)} of them in donated "
      f"arguments), generated code {_gib(report.code_bytes)}",
      f"  total {_gib(report.total_bytes)} of {_gib(chip.hbm_bytes)} HBM "
      f"({100 * report.total_bytes / chip.hbm_bytes:.1f}%)",
      f"  XLA cost per chip: {report.flops / 1e12:.3g} TFLOP, "
      f"{report.bytes_accessed / GiB:.2f} GiB accessed (a scanned layer loop's body is counted "
      "once)" + (f"; model FLOPs per chip {report.model_flops / 1e12:.3g} TFLOP"
                 if report.model_flops is not None else ""),
      "  collectives in the HLO (static count; ops in a loop body run once per iteration): " +
      ", ".join(f"{k} {c.count} ({_gib(c.bytes)})" for k, c in report.collectives.items()),
      f"  roofline ESTIMATE on {chip.name} ({chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16, "
      f"{chip.hbm_bandwidth / 1e9:.0f} GB/s HBM"
      + (f", {chip.ici_bandwidth / 1e9:.0f} GB/s ICI" if chip.ici_bandwidth else "") + "): "
      f"compute {r.compute_s * 1e3:.1f} ms, HBM {r.hbm_s * 1e3:.1f} ms, "
      + (f"ICI {r.ici_s * 1e3:.1f} ms" if r.ici_s is not None else "ICI not estimated") +
      f" -> step >= {r.step_s * 1e3:.1f} ms, MFU <= {100 * r.mfu:.0f}%",
  ]
  if tokens:
    lines.append(f"  = at most {tokens / r.step_s / 1e3:,.0f}k tokens/s per chip" if r.step_s
                 else "")
  return "\n".join(line for line in lines if line)


KNOBS = ("mesh.fsdp (shard parameters and optimizer state over more chips)",
         "mesh.tensor (shard heads, mlp and vocab)",
         "the LM's remat_policy=full or dots_saveable (recompute activations; an LLMConfig field of "
         "model.overrides: add it to the config file's overrides dict, the command line can only "
         "change keys the dict already has)",
         "train.batch_size or train.grad_accum_steps (activations scale with the microbatch)",
         "model.overrides.scan_layers=True (one layer's buffers instead of all layers')")


def fit_error(report: StepReport, chip: Chip) -> str | None:
  """Why the step does not fit the chip's HBM, and what to change; None if it fits."""
  if report.total_bytes <= chip.hbm_bytes:
    return None
  over = report.total_bytes - chip.hbm_bytes
  return (f"the {report.name} needs {_gib(report.total_bytes)} per chip, {_gib(over)} more "
          f"than a {chip.name}'s {_gib(chip.hbm_bytes)} HBM "
          f"({report.total_bytes / chip.hbm_bytes:.2f}x). Knobs that lower it: " +
          "; ".join(KNOBS))


# ------------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------------


def compile_experiment(config, topology: Topology, workdir: str | None = None,
                       eval_step: bool = True) -> tuple[list[StepReport], Any]:
  """Builds the experiment's Task and compiles its train (and eval) step for `topology`."""
  devices = topology_devices(topology)
  try:
    mesh = shard_lib.make_mesh(config.mesh, devices)
  except ValueError as e:
    raise ValueError(f"{e} (topology {topology.name} has {len(devices)} chips)") from e
  task = build_task(config, workdir)
  train_state = abstract_train_state(config, task, mesh)
  batch = abstract_batch(task, mesh)
  step = jax.ShapeDtypeStruct((), jnp.int32)
  num = len(devices)
  # Built outside the mesh: the step's base PRNG key is a host constant, not a TPU array.
  train = trainer.make_train_step(config, task, train_state, mesh)
  with jax.set_mesh(mesh):
    reports = [analyse("train step", train, (train_state.state, batch, step), num)]
    if eval_step:
      reports.append(analyse("eval forward", make_eval_step(task, train_state, mesh),
                             (train_state.state, batch), num))
  cfg = getattr(task, "model_config", None)
  if isinstance(cfg, llm.LLMConfig) and "tokens" in batch:
    rows, seq = batch["tokens"].shape
    for report in reports:
      report.model_flops = lm_model_flops(cfg, rows, seq, report is reports[0]) / num
  return reports, batch


def main(argv) -> None:
  del argv
  config = flags.FLAGS.config
  try:
    config_lib.check_config(config)
    topology = parse_topology(flags.FLAGS.topology)
  except ValueError as e:
    sys.exit(f"error: {e}")
  chip = topology.chip
  print(f"{topology.name}: {topology.num_chips} x {chip.name}, mesh {config.mesh.to_dict()}")
  with tempfile.TemporaryDirectory() as tmp:
    try:
      reports, batch = compile_experiment(config, topology, flags.FLAGS.workdir or tmp,
                                          eval_step=flags.FLAGS.eval_step)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
      sys.exit(f"error: {e}")
  tokens = None
  if "tokens" in batch:
    tokens = math.prod(batch["tokens"].shape) // topology.num_chips
  for report in reports:
    print(format_report(report, chip, tokens))
  error = fit_error(reports[0], chip)
  if error:
    sys.exit(f"error: {error}")


def _define_flags():
  config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).")
  flags.DEFINE_string("topology", None, "TPU slice: v4-8, v5p-16, v5e-16, v6e-64, v5p:2x2x2 ...")
  flags.DEFINE_string("workdir", "", "Where the task may write what it derives (the lm task's "
                      "tokenizer); \"\" = a temporary directory.")
  flags.DEFINE_bool("eval_step", True, "Also compile the eval forward pass.")
  flags.mark_flags_as_required(["config", "topology"])


def _parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing with a one-line error for bad overrides (as recjax.main)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError) as e:
    sys.exit(f"error in the command line ({type(e).__name__}): {e}")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=_parse_flags)
