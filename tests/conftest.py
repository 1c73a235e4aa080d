"""Test-wide JAX set-up: 8 virtual CPU devices, a persistent compilation cache, parsed absl flags.

The device count must be set before JAX initialises, so this runs at import, before any test
module. It goes through `jax_num_cpu_devices`, not XLA_FLAGS, so that the subprocesses tests
start (recjax.main, benchmarks, Grain workers) see one CPU device, as a user's run does.
"""
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# libtpu (the test extra has it, for tests/test_compile.py): no metadata server to ask, and the
# two xdist workers may both load it.
os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
REPO = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("RECJAX_DATA_DIR", str(REPO.parent / "shared" / "data"))

import jax  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_compilation_cache_dir", str(REPO / ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Grain worker threads and processes read absl flags (DESIGN.md pitfall).
flags.FLAGS.mark_as_parsed()
