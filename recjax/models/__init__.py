"""recjax models (Flax NNX).

Parameters carry logical axis names only as metadata; the trainer turns them into shardings
(recjax.train.sharding) and creates the state under jit with those out_shardings. Flax's eager
sharding (constraining each variable as it is created) is switched off so models can also be built
outside a mesh, in tests and notebooks.
"""
from flax import nnx

nnx.use_eager_sharding(False)
