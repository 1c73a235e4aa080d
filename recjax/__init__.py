"""recjax: JAX/Flax NNX training for ID-based and LLM-based sequential recommendation."""
from recjax.train import host_memory as _host_memory

# Before JAX creates its CPU client: XLA's per-step buffers then reuse memory (host_memory.py).
_host_memory.retain_host_allocations()
