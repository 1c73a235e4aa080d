"""recjax.train.host_memory: XLA:CPU's per-step buffers are reused instead of faulted in again."""
import os
import subprocess
import sys
import textwrap

import pytest

from recjax.train import host_memory

pytestmark = pytest.mark.skipif(host_memory._glibc() is None, reason="needs glibc (Linux)")

# A jitted step whose temporaries (the [4096, 4096] float32 tanh(a @ b): 64 MB) exceed glibc's
# 32 MB mmap ceiling; prints the fewest minor page faults of one call over six warm calls. The
# fewest, because XLA frees a step's buffer on its own thread: on a loaded machine that free can
# land after the next call's malloc, which then grows the heap once (faults) even when retained.
_STEP_FAULTS = textwrap.dedent("""
    import resource
    import recjax, jax, jax.numpy as jnp
    from recjax.train import host_memory
    f = jax.jit(lambda a, b: jnp.tanh(a @ b) @ b.T)
    a = jnp.ones((4096, 64)); b = jnp.ones((64, 4096))
    for _ in range(3):
      f(a, b).block_until_ready()
    faults = []
    for _ in range(6):
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      f(a, b).block_until_ready()
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(host_memory.retain_host_allocations(), min(faults))
""")


def _step_faults(allocator: str) -> tuple[str, int]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", RECJAX_HOST_ALLOCATOR=allocator)
  env.pop("LD_PRELOAD", None)
  out = subprocess.run([sys.executable, "-c", _STEP_FAULTS], env=env, capture_output=True,
                       text=True, check=True).stdout.split()
  return out[-2], int(out[-1])


def test_retained_allocations_do_not_fault_again():
  applied, faults = _step_faults("retain")
  system_applied, system_faults = _step_faults("system")
  assert (applied, system_applied) == ("True", "False")
  # glibc's default maps the 64 MB buffer afresh: >= 16k 4-KB pages on every call.
  assert system_faults > 10_000, system_faults
  assert faults < system_faults / 20, (faults, system_faults)


def test_bad_setting_names_the_variable(monkeypatch):
  monkeypatch.setattr(host_memory, "_applied", None)
  monkeypatch.setenv(host_memory.ENV, "tcmalloc")
  with pytest.raises(ValueError, match="RECJAX_HOST_ALLOCATOR='tcmalloc'"):
    host_memory.retain_host_allocations()
