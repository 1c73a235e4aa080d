"""Running `python -m recjax.main` as a user would, in a subprocess."""
import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_main_env(devices: int = 1) -> dict[str, str]:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_COMPILATION_CACHE_DIR"] = str(REPO / ".jax_cache")
  env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
  return env
