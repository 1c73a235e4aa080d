"""SASRec (Kang & McAuley, ICDM 2018) in Flax NNX.

Item and learned position embeddings, causal self-attention blocks with point-wise feed-forward
layers, and item scores from the shared item embedding table. Layer norm placement:
- `norm="pre"`: the original code (SASRec, SASRec.pytorch's default): the attention query is
  normalised and is also the residual (`q = LN(x); x = q + Attn(q, x, x)`), then
  `y = LN(x); x = y + FFN(y)`; a final norm.
- `norm="pre_ln"`: the standard pre-LN Transformer (SASRec.pytorch `--norm_first`):
  `x = x + Attn(LN(x)); x = x + FFN(LN(x))`; a final norm.
- `norm="post"`: the original Transformer's post-norm residual.

Inputs are right-aligned (left-padded with item 0). Positions count back from the most recent item,
which always has position `max_len`, so a batch trimmed to a shorter width computes exactly what
the full-width batch would: padding is masked out of attention as keys, not just as outputs.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
  num_items: int          # catalogue size; ids 1..num_items, 0 = padding
  max_len: int = 50       # longest history the model reads (most recent items kept)
  hidden: int = 50        # embedding and hidden width
  num_blocks: int = 2     # self-attention blocks
  num_heads: int = 1      # attention heads; hidden must divide by it
  dropout: float = 0.2    # dropout on embeddings, attention weights and feed-forward
  norm: str = "pre"       # "pre" (original code), "pre_ln" (standard) or "post" (see above)
  dtype: str = "float32"  # compute dtype; parameters stay float32
  # Embedding tables: "xavier" (normal, std sqrt(2 / (rows + hidden)), as SASRec.pytorch) or
  # "normal" (std hidden**-0.5, unit scale after the sqrt(hidden) multiplier).
  embedding_init: str = "xavier"
  # SASRec.pytorch masks attention only causally, so every position also attends to the left
  # padding, whose keys and values are the projection biases (padding inputs are zero): the
  # reference model has a learned attention sink weighted by the number of pads,
  # max_len - length. True reproduces it exactly (the pads enter as one key with log-count
  # weight, so trimmed batches stay exact); False masks padding keys out.
  attend_to_padding: bool = False


def _dense(din: int, dout: int, axes: tuple[str, str], rngs: nnx.Rngs, dtype) -> nnx.Linear:
  return nnx.Linear(din, dout, rngs=rngs, dtype=dtype,
                    kernel_init=nnx.with_partitioning(nnx.initializers.xavier_uniform(), axes),
                    bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (axes[1],)))


def _norm(dim: int, rngs: nnx.Rngs, dtype) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=1e-8, rngs=rngs, dtype=dtype,
                       scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)),
                       bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), ("embed",)))


class Block(nnx.Module):
  """Causal multi-head self-attention then a point-wise feed-forward network."""

  def __init__(self, cfg: SASRecConfig, rngs: nnx.Rngs):
    d, dtype = cfg.hidden, jnp.dtype(cfg.dtype)
    self.cfg = cfg
    self.attn_norm = _norm(d, rngs, dtype)
    self.query = _dense(d, d, ("embed", "heads"), rngs, dtype)
    self.key = _dense(d, d, ("embed", "heads"), rngs, dtype)
    self.value = _dense(d, d, ("embed", "heads"), rngs, dtype)
    self.out = _dense(d, d, ("heads", "embed"), rngs, dtype)
    self.ffn_norm = _norm(d, rngs, dtype)
    self.ffn_in = _dense(d, d, ("embed", "mlp"), rngs, dtype)
    self.ffn_out = _dense(d, d, ("mlp", "embed"), rngs, dtype)
    self.dropout = nnx.Dropout(cfg.dropout)

  def attention(self, q_in, kv_in, mask, num_pads, pad_kv_in, rngs):
    b, t, d = q_in.shape
    h = self.cfg.num_heads
    split = lambda x: x.reshape(x.shape[0], -1, h, d // h)
    q, k, v = split(self.query(q_in)), split(self.key(kv_in)), split(self.value(kv_in))
    if num_pads is not None:  # all pads share one key/value: their input is `pad_kv_in`
      pad = lambda proj: jnp.broadcast_to(split(proj(pad_kv_in)), (b, 1, h, d // h))
      k = jnp.concatenate([pad(self.key), k], axis=1)
      v = jnp.concatenate([pad(self.value), v], axis=1)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d // h).astype(q.dtype)
    logits = logits.astype(jnp.float32)
    if num_pads is not None:
      log_count = jnp.log(num_pads.astype(jnp.float32))[:, None, None, None]  # -inf: no pads
      logits = jnp.concatenate([logits[..., :1] + log_count, logits[..., 1:]], axis=-1)
      mask = jnp.concatenate([jnp.ones((b, t, 1), bool), mask], axis=-1)
    logits = jnp.where(mask[:, None], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
    weights = self.dropout(weights, rngs=rngs)
    return self.out(jnp.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, d))

  def ffn(self, x, rngs):
    y = self.dropout(jax.nn.relu(self.ffn_in(x)), rngs=rngs)
    return self.dropout(self.ffn_out(y), rngs=rngs)

  def __call__(self, x, mask, num_pads, rngs):
    zero = jnp.zeros((1, 1, x.shape[-1]), x.dtype)  # a padding position's input
    if self.cfg.norm == "pre":
      q = self.attn_norm(x)
      x = q + self.attention(q, x, mask, num_pads, zero, rngs)
      y = self.ffn_norm(x)
      return y + self.ffn(y, rngs)
    if self.cfg.norm == "pre_ln":
      y = self.attn_norm(x)
      x = x + self.attention(y, y, mask, num_pads, self.attn_norm(zero), rngs)
      return x + self.ffn(self.ffn_norm(x), rngs)
    x = self.attn_norm(x + self.attention(x, x, mask, num_pads, zero, rngs))
    return self.ffn_norm(x + self.ffn(x, rngs))


class SASRec(nnx.Module):
  """Self-attentive sequential recommender."""

  def __init__(self, cfg: SASRecConfig, rngs: nnx.Rngs):
    if cfg.norm not in ("pre", "pre_ln", "post"):
      raise ValueError(f"sasrec norm must be 'pre', 'pre_ln' or 'post', got '{cfg.norm}'")
    if cfg.hidden % cfg.num_heads:
      raise ValueError(f"sasrec hidden={cfg.hidden} is not divisible by num_heads={cfg.num_heads}")
    self.cfg = cfg
    if cfg.embedding_init == "xavier":  # the reference code's xavier_normal_ on every table
      init = nnx.initializers.xavier_normal()
    elif cfg.embedding_init == "normal":
      init = nnx.initializers.normal(stddev=cfg.hidden ** -0.5)
    else:
      raise ValueError(f"sasrec embedding_init must be 'xavier' or 'normal', "
                       f"got '{cfg.embedding_init}'")
    self.item_embedding = nnx.Embed(
        cfg.num_items + 1, cfg.hidden, rngs=rngs, dtype=jnp.dtype(cfg.dtype),
        embedding_init=nnx.with_partitioning(init, ("items", "embed")))
    self.position_embedding = nnx.Embed(
        cfg.max_len + 1, cfg.hidden, rngs=rngs, dtype=jnp.dtype(cfg.dtype),
        embedding_init=nnx.with_partitioning(init, (None, "embed")))
    self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_blocks)])
    self.final_norm = (_norm(cfg.hidden, rngs, jnp.dtype(cfg.dtype))
                       if cfg.norm in ("pre", "pre_ln") else None)
    self.dropout = nnx.Dropout(cfg.dropout)

  def __call__(self, items: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Hidden state after each position of right-aligned `items` [B, T] -> [B, T, hidden]."""
    valid = items > 0
    t = items.shape[1]
    # The last column is the most recent item, at position max_len; padding gets position 0.
    positions = jnp.where(valid, self.cfg.max_len - t + 1 + jnp.arange(t), 0)
    x = self.item_embedding(items) * (self.cfg.hidden ** 0.5)
    x = x + self.position_embedding(positions)
    x = self.dropout(x, rngs=rngs) * valid[..., None]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    mask = causal[None] & valid[:, None, :]
    # Pads of the full max_len-wide input (a trimmed batch holds only some of them).
    num_pads = (self.cfg.max_len - jnp.sum(valid, axis=1)) if self.cfg.attend_to_padding else None
    for block in self.blocks:
      x = block(x, mask, num_pads, rngs) * valid[..., None]
    if self.final_norm is not None:
      x = self.final_norm(x)
    return x

  def item_table(self) -> jax.Array:
    """Item embeddings used as output weights [num_items + 1, hidden]; row 0 is padding."""
    return self.item_embedding.embedding[...]

  def score(self, hidden: jax.Array, items: jax.Array) -> jax.Array:
    """Dot-product scores of hidden states [..., D] against item ids [..., K] -> [..., K]."""
    return jnp.einsum("...d,...kd->...k", hidden, self.item_embedding(items))
