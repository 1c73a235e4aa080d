"""Running `python -m recjax.main` as a user would, in a subprocess."""
import importlib.util
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


def config_file(name: str, arg: str, overrides: dict | None = None):
  """`get_config(arg)` of configs/<name>.py, as `--config=configs/<name>.py:<arg>` loads it;
  with `overrides` ({"a.b": value}), those applied and the result schema-checked."""
  spec = importlib.util.spec_from_file_location(f"{name}_cfg", REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  if overrides is not None:
    from recjax import config as config_lib  # pylint: disable=g-import-not-at-top
    from tests.trainer_utils import apply_overrides  # pylint: disable=g-import-not-at-top
    apply_overrides(config, overrides)
    config_lib.check_config(config)
  return config


def cli_overrides(values: dict) -> list[str]:
  """{"a.b": 1, "c": {"d": 2}, "e": (3, 4)} -> the --config.KEY=VALUE flags of recjax.main."""
  out = []
  for key, value in values.items():
    if isinstance(value, dict):
      out += [f"--config.{key}.{k}={v}" for k, v in value.items()]
    elif isinstance(value, tuple):
      out.append(f"--config.{key}=({','.join(map(str, value))},)")
    else:
      out.append(f"--config.{key}={value}")
  return out
