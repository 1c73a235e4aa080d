"""Host-side coordination of the processes of one job (jax and numpy only)."""
from __future__ import annotations

import pathlib
from typing import Callable

import jax
import numpy as np


def share_from_process_zero(path: pathlib.Path, create: Callable[[], None]) -> None:
  """Runs `create()` (which writes `path`) on process 0 if `path` is absent, then gives every
  process the same file, also when the workdir is not a shared file system."""
  path = pathlib.Path(path)
  if jax.process_count() == 1:
    if not path.exists():
      create()
    return
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0 and not path.exists():
    create()
  data = path.read_bytes() if jax.process_index() == 0 else b""
  size = int(multihost_utils.broadcast_one_to_all(np.int64(len(data))))
  buf = np.frombuffer(data, np.uint8) if data else np.zeros(size, np.uint8)
  buf = np.asarray(multihost_utils.broadcast_one_to_all(buf))
  if jax.process_index() != 0 and (not path.exists() or path.read_bytes() != buf.tobytes()):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
