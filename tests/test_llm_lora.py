"""LoRA: only adapters train, merging is exact, optimizer state is adapter-only."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recjax.models import llm
from recjax.models import lora

RANK = 4
BASE = nnx.All(nnx.Param, nnx.Not(lora.LoRAParam))


def _snapshot(model, filt):
  return {path: np.array(v.get_value())
          for path, v in nnx.to_flat_state(nnx.state(model, filt))}


@pytest.fixture(scope='module')
def tokens():
  return jnp.asarray(np.random.RandomState(0).randint(1, 256, (2, 9)), jnp.int32)


@pytest.fixture(scope='module')
def forward():
  return nnx.jit(lambda m, t: m(t).logits)


@pytest.fixture(scope='module', params=[True, False], ids=['scan', 'loop'])
def trained(request, tokens, forward):
  """A tiny model with adapters on every projection after 3 Adam steps."""
  model = llm.create_model('tiny_qwen3', scan_layers=request.param,
                           initializer_range=0.2)
  before_lora = forward(model, tokens)
  lora.add_lora(model, lora.LoRAConfig(rank=RANK, alpha=8.0, targets=lora.TARGETS),
                rngs=nnx.Rngs(1))
  np.testing.assert_array_equal(forward(model, tokens), before_lora)  # B = 0.
  base = _snapshot(model, BASE)
  adapters = _snapshot(model, lora.LoRAParam)
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=lora.LoRAParam)

  @nnx.jit
  def step(model, optimizer, tokens):
    def loss_fn(model):
      logits = model(tokens[:, :-1]).logits
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, tokens[:, 1:]).mean()
    loss, grads = nnx.value_and_grad(
        loss_fn, argnums=nnx.DiffState(0, lora.LoRAParam))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer, tokens)) for _ in range(3)]
  return model, optimizer, base, adapters, losses, before_lora


def test_only_adapters_change(trained):
  model, _, base, adapters, losses, _ = trained
  assert losses[-1] < losses[0]
  after = _snapshot(model, BASE)
  assert after.keys() == base.keys()
  for path, value in base.items():
    assert value.tobytes() == after[path].tobytes(), path
  moved = _snapshot(model, lora.LoRAParam)
  assert len(moved) == 2 * len(lora.TARGETS) * (1 if model.cfg.scan_layers
                                               else model.cfg.num_layers)
  assert any(not np.array_equal(adapters[p], moved[p]) for p in adapters)


def test_optimizer_state_is_adapter_shaped(trained):
  model, optimizer, *_ = trained
  adapter_shapes = sorted(v.shape for v in _snapshot(model, lora.LoRAParam).values())
  state_shapes = [x.shape for x in jax.tree.leaves(optimizer.opt_state)
                  if np.ndim(x) > 0]
  # Adam keeps two moments per adapter and nothing for the base weights.
  assert sorted(state_shapes) == sorted(adapter_shapes * 2)
  for shape in state_shapes:
    assert RANK in shape


def test_merge_gives_the_same_logits(trained, tokens, forward):
  model, _, _, _, _, before_lora = trained
  unmerged = forward(model, tokens)
  assert not np.allclose(unmerged, before_lora)
  merged = lora.merge_lora(nnx.clone(model))
  assert not jax.tree.leaves(nnx.state(merged, lora.LoRAParam))
  np.testing.assert_allclose(forward(merged, tokens), unmerged, atol=1e-5)


def test_unknown_target_rejected():
  with pytest.raises(ValueError, match='Unknown LoRA targets'):
    lora.LoRAConfig(targets=('qkv',))
