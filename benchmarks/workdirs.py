"""What the benchmark scripts share: run a recjax command, read a finished workdir's results."""
from __future__ import annotations

import json
import os
import subprocess


def run(cmd: list[str]) -> None:
  """Echoes `cmd` and runs it; a failed step stops the benchmark."""
  print("$", " ".join(cmd), flush=True)
  subprocess.run(cmd, check=True)


def results(workdir: str) -> dict[str, float]:
  """The workdir's results.json (final metrics of a finished recjax.main run)."""
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    return json.load(f)
