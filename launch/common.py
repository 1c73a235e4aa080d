"""Accelerator names and sweep specs, shared by the launchers (standard library only).

Accelerator names are the ones Cloud TPU and the launchers' users already type:

    v4-8 ... v4-4096, v5p-8 ... v5p-4096      TensorCores (2 per chip), 4 chips per host
    v5litepod-1 ... v5litepod-256 (= v5e-N)   chips; 1-8 chips are one host, above that 4 per host
    v6e-1 ... v6e-256                         chips; as v5e
    h100-N, h200-N                            GPUs: N <= 8 on one node, or a multiple of 8 (N/8 nodes)

A sweep is `key=v1,v2,...`; several sweeps make the grid of all their combinations.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re

# Cores (v4, v5p) or chips (v5e, v6e) -> the slice's default chip topology (Cloud TPU docs'
# accelerator types; larger v4/v5p slices have other shapes too, which need --topology).
_TOPOLOGY_3D = {8: "2x2x1", 16: "2x2x2", 32: "2x2x4", 64: "2x4x4", 128: "4x4x4", 256: "4x4x8",
                512: "4x8x8", 1024: "8x8x8", 2048: "8x8x16", 4096: "8x16x16"}
_TOPOLOGY_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
                256: "16x16"}


@dataclasses.dataclass(frozen=True)
class _Family:
  xm_resource: str      # the xm.ResourceType name (xmanager/xm/resources.py)
  gcloud_prefix: str    # `gcloud compute tpus tpu-vm create --accelerator-type=<prefix>-N`
  runtime: str          # default TPU VM software version
  counts_cores: bool    # N in the name counts TensorCores (2 per chip), not chips
  topologies: dict[int, str]


_TPU_FAMILIES = {
    "v4": _Family("tpu_v4", "v4", "tpu-ubuntu2204-base", True, _TOPOLOGY_3D),
    "v5p": _Family("tpu_v5p", "v5p", "v2-alpha-tpuv5", True, _TOPOLOGY_3D),
    "v5litepod": _Family("tpu_v5e", "v5litepod", "v2-alpha-tpuv5-lite", False, _TOPOLOGY_2D),
    "v6e": _Family("tpu_v6e", "v6e", "v2-alpha-tpuv6e", False, _TOPOLOGY_2D),
}
_ALIASES = {"v5e": "v5litepod"}
_GPUS = {"h100": "h100", "h200": "h200"}  # name -> xm.ResourceType name
GPUS_PER_NODE = 8


@dataclasses.dataclass(frozen=True)
class Accelerator:
  """One slice or set of GPU nodes: what a job asks the scheduler for."""
  name: str             # canonical name, e.g. "v5litepod-16", "h100-16"
  kind: str             # "tpu" or "gpu"
  xm_resource: str      # xm.ResourceType name: tpu_v5e, h100, ...
  topology: str         # chip grid ("4x4") for TPUs; GPUs per node ("8") for GPUs
  chips: int            # chips (TPU) or GPUs in the whole job
  hosts: int            # TPU VM hosts or GPU nodes; one recjax process each
  gcloud_type: str = ""  # --accelerator-type for gcloud (TPUs only)
  runtime: str = ""      # default TPU VM software version (TPUs only)

  @property
  def chips_per_host(self) -> int:
    return self.chips // self.hosts


def known_accelerators() -> str:
  """A one-line list of the accepted names, for error messages."""
  tpus = ", ".join(f"{f.gcloud_prefix}-{{{','.join(map(str, _sizes(f)))}}}"
                   for f in _TPU_FAMILIES.values())
  return f"{tpus} (v5e-N = v5litepod-N); GPUs: h100-N, h200-N (N in 1,2,4,8 or a multiple of 8)"


def _sizes(family: _Family) -> list[int]:
  return sorted(family.topologies)


def parse_accelerator(name: str, topology: str = "") -> Accelerator:
  """'v5e-16' -> Accelerator(v5litepod-16, 4x4 chips, 4 hosts); ValueError naming what is wrong.

  `topology` overrides a TPU slice's default chip grid (e.g. v4-64 as 4x4x2); its chip count
  must match the name's.
  """
  match = re.fullmatch(r"([a-z0-9]+)-(\d+)", name.strip().lower())
  if not match:
    raise ValueError(f"accelerator {name!r} is not of the form <type>-<count> "
                     f"(known: {known_accelerators()})")
  family_name, count = _ALIASES.get(match[1], match[1]), int(match[2])
  if family_name in _GPUS:
    if topology:
      raise ValueError(f"--topology applies to TPU slices, not to the GPU accelerator {name!r}")
    if count not in (1, 2, 4) and (count < GPUS_PER_NODE or count % GPUS_PER_NODE):
      raise ValueError(f"accelerator {name!r}: a GPU job takes 1, 2, 4 or 8 GPUs on one node, "
                       f"or a multiple of {GPUS_PER_NODE} (whole nodes); got {count}")
    hosts = max(1, count // GPUS_PER_NODE)
    return Accelerator(name=f"{family_name}-{count}", kind="gpu", xm_resource=_GPUS[family_name],
                       topology=str(count // hosts), chips=count, hosts=hosts)
  family = _TPU_FAMILIES.get(family_name)
  if family is None:
    raise ValueError(f"unknown accelerator type {match[1]!r} in {name!r} "
                     f"(known: {known_accelerators()})")
  if count not in family.topologies:
    unit = "TensorCores (2 per chip)" if family.counts_cores else "chips"
    raise ValueError(f"accelerator {name!r}: {family.gcloud_prefix} slices have "
                     f"{', '.join(map(str, _sizes(family)))} {unit}; got {count}")
  chips = count // 2 if family.counts_cores else count
  grid = topology or family.topologies[count]
  dims = grid.split("x")
  if not all(d.isdigit() and int(d) > 0 for d in dims) or len(dims) != len(
      family.topologies[count].split("x")):
    raise ValueError(f"--topology={grid!r} for {name!r}: expected "
                     f"{len(family.topologies[count].split('x'))} positive sizes joined by 'x', "
                     f"like {family.topologies[count]!r}")
  grid_chips = 1
  for d in dims:
    grid_chips *= int(d)
  if grid_chips != chips:
    raise ValueError(f"--topology={grid!r} has {grid_chips} chips but {name!r} has {chips}")
  # v5e/v6e slices of up to 8 chips are one host; every other slice has 4 chips per host.
  hosts = 1 if (not family.counts_cores and chips <= 8) else max(1, chips // 4)
  return Accelerator(name=f"{family.gcloud_prefix}-{count}", kind="tpu",
                     xm_resource=family.xm_resource, topology=grid, chips=chips, hosts=hosts,
                     gcloud_type=f"{family.gcloud_prefix}-{count}", runtime=family.runtime)


def parse_override(spec: str, what: str = "--override") -> tuple[str, str]:
  """'train.seed=3' -> ('train.seed', '3'); ValueError naming the flag otherwise."""
  key, sep, value = spec.partition("=")
  key = key.strip()
  if key.startswith("config."):
    key = key[len("config."):]
  if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
    raise ValueError(f"{what}={spec!r}: expected <config key>=<value>, e.g. train.seed=3")
  return key, value


def parse_sweeps(specs: list[str]) -> list[tuple[str, list[str]]]:
  """['a.b=1,2', 'c=x,y'] -> [('a.b', ['1', '2']), ('c', ['x', 'y'])]; ValueError if malformed."""
  sweeps, seen = [], set()
  for spec in specs:
    key, values = parse_override(spec, "--sweep")
    items = [v.strip() for v in values.split(",")]
    if not values.strip() or any(not v for v in items):
      raise ValueError(f"--sweep={spec!r}: expected <config key>=<v1>,<v2>,... with no empty "
                       "values")
    if len(set(items)) != len(items):
      raise ValueError(f"--sweep={spec!r}: a value is repeated")
    if key in seen:
      raise ValueError(f"--sweep: config key {key!r} is swept twice; give its values in one "
                       "--sweep")
    seen.add(key)
    sweeps.append((key, items))
  return sweeps


@dataclasses.dataclass(frozen=True)
class WorkUnit:
  index: int
  overrides: dict[str, str]  # config key -> value, without the "config." prefix
  workdir: str


def work_units(workdir: str, sweeps: list[tuple[str, list[str]]]) -> list[WorkUnit]:
  """The grid of `sweeps`, one work unit per point, each with its own workdir.

  No sweep: one unit in `workdir` itself. Otherwise unit i of the grid (the last sweep varies
  fastest) runs in `<workdir>/<i>_<key>=<value>[,<key>=<value>...]` ('/' in a value becomes '_').
  """
  if not sweeps:
    return [WorkUnit(0, {}, workdir)]
  keys = [k for k, _ in sweeps]
  units = []
  for i, values in enumerate(itertools.product(*(v for _, v in sweeps))):
    overrides = dict(zip(keys, values))
    name = ",".join(f"{k}={v.replace('/', '_')}" for k, v in overrides.items())
    units.append(WorkUnit(i, overrides, f"{workdir.rstrip('/')}/{i}_{name}"))
  return units


def check_config_file(config: str, repo: str) -> None:
  """The job runs `--config` from a copy of this checkout: ValueError if the file is not in it."""
  path = config.split(":", 1)[0]
  if os.path.isabs(path) or not os.path.isfile(os.path.join(repo, path)):
    raise ValueError(f"--config={config!r}: {path!r} is not a file of this checkout ({repo}), "
                     "which is what the job runs from")


def check_shared_workdir(workdir: str, why: str) -> None:
  """A multi-host job's workdir must be a URL every host reaches (gs://...): ValueError if not."""
  if "://" not in workdir:
    raise ValueError(f"--workdir={workdir!r} is a local path, but {why}: use a bucket, "
                     "e.g. --workdir=gs://BUCKET/runs/NAME")
