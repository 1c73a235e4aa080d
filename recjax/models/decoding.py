"""Batched, jitted KV-cache decoding for `recjax.models.llm.LLM`.

`generate` prefills left-padded prompts into a fixed-size `KVCache`, then runs
a `jax.lax.while_loop` of single-token steps: greedy, temperature/top-k/top-p
sampling, or beam search (alive/finished beams, optional length
normalisation). Generation can be restricted to a catalogue of token sequences
with a `Trie`: its arrays live on device and mask the logits inside the loop.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from recjax.models import llm

Array = jax.Array
_NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How to decode.

  Attributes:
    max_new_tokens: Tokens generated per row at most (the stop token
      included).
    method: 'greedy', 'sample' or 'beam'.
    temperature: Softmax temperature for 'sample'.
    top_k: For 'sample', keep only the k most likely tokens (0: all).
    top_p: For 'sample', keep the smallest set of most likely tokens whose
      probability reaches top_p (1.0: all).
    num_beams: Beams per prompt for 'beam'.
    length_penalty: For 'beam', finished hypotheses are ranked by
      log_prob / length**length_penalty (length counts generated tokens,
      stop token included); 0 ranks by the summed log-probability, 1 by the
      mean. Must be >= 0.
    stop_tokens: Token ids that end a row (e.g. EOS); kept in the output.
    pad_id: Id written after a row has finished.
    cache_dtype: KV-cache dtype; None uses the model's compute dtype.
  """
  max_new_tokens: int = 16
  method: str = 'greedy'
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  num_beams: int = 4
  length_penalty: float = 0.0
  stop_tokens: tuple[int, ...] = ()
  pad_id: int = 0
  cache_dtype: str | None = None

  def __post_init__(self):
    if self.method not in ('greedy', 'sample', 'beam'):
      raise ValueError(f'Unknown decoding method {self.method!r}')
    if self.length_penalty < 0:
      raise ValueError('length_penalty must be >= 0')
    object.__setattr__(self, 'stop_tokens', tuple(self.stop_tokens))


@flax.struct.dataclass
class Trie:
  """Prefix trie of allowed token sequences, as device arrays (CSR layout).

  Node 0 is the root. The children of node n are edges
  `starts[n]:starts[n + 1]`, edge e reading token `tokens[e]` and leading to
  node `children[e]`. A node without children ends a sequence: decoding stops
  there. When one allowed sequence is a prefix of another, end every sequence
  with an end token (e.g. EOS, also listed in `stop_tokens`).

  Attributes:
    starts: (num_nodes + 1,) int32 edge offsets.
    tokens: (num_edges,) int32 token of each edge, sorted within a node.
    children: (num_edges,) int32 target node of each edge.
    max_children: Largest number of children of a node (static).
  """
  starts: Array
  tokens: Array
  children: Array
  max_children: int = flax.struct.field(pytree_node=False)

  @classmethod
  def from_sequences(cls, sequences: Sequence[Sequence[int]]) -> 'Trie':
    """Builds the trie of `sequences` (duplicates are fine)."""
    nodes: list[dict[int, int]] = [{}]
    for seq in sequences:
      if not len(seq):
        raise ValueError('Empty sequence in trie')
      n = 0
      for tok in seq:
        tok = int(tok)
        if tok not in nodes[n]:
          nodes[n][tok] = len(nodes)
          nodes.append({})
        n = nodes[n][tok]
    starts = np.zeros(len(nodes) + 1, np.int32)
    starts[1:] = np.cumsum([len(c) for c in nodes])
    tokens = np.array([t for c in nodes for t in sorted(c)], np.int32)
    children = np.array([c[t] for c in nodes for t in sorted(c)], np.int32)
    return cls(starts=jnp.asarray(starts), tokens=jnp.asarray(tokens),
               children=jnp.asarray(children),
               max_children=max(len(c) for c in nodes))

  def _edges(self, nodes: Array) -> tuple[Array, Array]:
    start = self.starts[nodes]
    count = self.starts[nodes + 1] - start
    idx = start[..., None] + jnp.arange(self.max_children)
    valid = jnp.arange(self.max_children) < count[..., None]
    return jnp.minimum(idx, self.tokens.shape[0] - 1), valid

  def allowed(self, nodes: Array, vocab_size: int) -> Array:
    """(..., vocab_size) bool mask of the tokens allowed after `nodes`."""
    idx, valid = self._edges(nodes)
    toks = jnp.where(valid, self.tokens[idx], vocab_size)  # Out of range: drop.
    flat = toks.reshape(-1, self.max_children)
    rows = jnp.arange(flat.shape[0])[:, None]
    mask = jnp.zeros((flat.shape[0], vocab_size), bool)
    mask = mask.at[rows, flat].set(True, mode='drop')
    return mask.reshape(nodes.shape + (vocab_size,))

  def advance(self, nodes: Array, tokens: Array) -> tuple[Array, Array]:
    """(next nodes, whether they end a sequence) after reading `tokens`."""
    idx, valid = self._edges(nodes)
    match = valid & (self.tokens[idx] == tokens[..., None])
    edge = jnp.take_along_axis(idx, jnp.argmax(match, -1)[..., None], -1)[..., 0]
    nxt = jnp.where(match.any(-1), self.children[edge], 0)
    is_leaf = self.starts[nxt + 1] == self.starts[nxt]
    return nxt, is_leaf


@flax.struct.dataclass
class GenerateOutput:
  """Greedy/sampling result.

  Attributes:
    tokens: (batch, max_new_tokens) generated ids, `pad_id` after the end.
    lengths: (batch,) number of generated tokens (stop token included).
  """
  tokens: Array
  lengths: Array


@flax.struct.dataclass
class BeamOutput:
  """Beam search result, best beam first.

  Attributes:
    tokens: (batch, num_beams, max_new_tokens) ids, `pad_id` after the end.
    scores: (batch, num_beams) ranking scores (log_probs / length**penalty);
      -inf for slots without a hypothesis (e.g. fewer allowed sequences than
      beams).
    log_probs: (batch, num_beams) summed log-probabilities the model assigns
      to the tokens (masked, not renormalised, under a trie).
    lengths: (batch, num_beams) generated tokens, stop token included.
  """
  tokens: Array
  scores: Array
  log_probs: Array
  lengths: Array


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int = 0,
             length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Left-pads token lists into a (batch, length) array; returns it and lengths."""
  lengths = np.array([len(s) for s in sequences], np.int32)
  length = length or int(lengths.max())
  out = np.full((len(sequences), length), pad_id, np.int32)
  for i, s in enumerate(sequences):
    if len(s):
      out[i, length - len(s):] = s
  return out, lengths


def generate(model: llm.LLM,
             prompts: Array | np.ndarray,
             prompt_lengths: Array | np.ndarray | None = None,
             config: DecodeConfig = DecodeConfig(),
             *,
             rng: Array | None = None,
             trie: Trie | None = None) -> GenerateOutput | BeamOutput:
  """Generates continuations of a batch of prompts.

  Args:
    model: the language model.
    prompts: (batch, prompt_len) int ids, left-padded (see `left_pad`).
    prompt_lengths: (batch,) real prompt lengths (>= 1); default prompt_len.
    config: decoding settings (static: each distinct config compiles once).
    rng: PRNG key for 'sample'.
    trie: restricts the generated tokens to the trie's sequences.

  Returns:
    `GenerateOutput` for greedy/sample, `BeamOutput` for beam search.
  """
  prompts = jnp.asarray(prompts, jnp.int32)
  if prompt_lengths is None:
    prompt_lengths = jnp.full((prompts.shape[0],), prompts.shape[1], jnp.int32)
  prompt_lengths = jnp.asarray(prompt_lengths, jnp.int32)
  if rng is None:
    rng = jax.random.key(0)
  graphdef, state = nnx.split(model)
  return _generate(graphdef, state, prompts, prompt_lengths, rng, trie, config)


# ------------------------------------------------------------------------------
# Implementation.
# ------------------------------------------------------------------------------


def _prefill(model: llm.LLM, prompts: Array, lengths: Array, cache_len: int,
             cache_dtype) -> tuple[Array, llm.KVCache]:
  b, p = prompts.shape
  pad = p - lengths
  slot = jnp.arange(p, dtype=jnp.int32)
  segment_ids = (slot[None] >= pad[:, None]).astype(jnp.int32)
  positions = jnp.maximum(slot[None] - pad[:, None], 0)
  cache = llm.KVCache.create(model.cfg, b, cache_len, cache_dtype)
  out = model(prompts, positions=positions, segment_ids=segment_ids,
              cache=cache, return_hidden=True, compute_logits=False)
  return model.logits(out.hidden[:, -1]), out.cache


def _step(model: llm.LLM, tokens: Array, positions: Array,
          cache: llm.KVCache) -> tuple[Array, llm.KVCache]:
  out = model(tokens[:, None], positions=positions[:, None],
              segment_ids=jnp.ones_like(tokens)[:, None], cache=cache)
  return out.logits[:, 0], out.cache


def _filter_logits(logits: Array, config: DecodeConfig) -> Array:
  logits = logits / config.temperature
  if config.top_k > 0:
    kth = jax.lax.top_k(logits, config.top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, _NEG_INF, logits)
  if config.top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # Mass strictly above each.
    kept = jnp.where(before < config.top_p, sorted_logits, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, _NEG_INF, logits)
  return logits


def _is_stop(tokens: Array, stop_tokens: tuple[int, ...]) -> Array:
  if not stop_tokens:
    return jnp.zeros(tokens.shape, bool)
  return jnp.isin(tokens, jnp.asarray(stop_tokens, jnp.int32))


@functools.partial(jax.jit, static_argnames=('graphdef', 'config'))
def _generate(graphdef, state, prompts, lengths, rng, trie, config):
  model = nnx.merge(graphdef, state)
  n = config.max_new_tokens
  cache_len = prompts.shape[1] + n
  logits, cache = _prefill(model, prompts, lengths, cache_len, config.cache_dtype)
  if config.method == 'beam':
    return _beam_search(model, logits, cache, lengths, trie, config)
  return _sample_loop(model, logits, cache, lengths, rng, trie, config)


def _sample_loop(model, logits, cache, lengths, rng, trie, config):
  b = logits.shape[0]
  vocab = logits.shape[-1]
  n = config.max_new_tokens

  def cond(carry):
    i, _, _, _, done, *_ = carry
    return (i < n) & ~jnp.all(done)

  def body(carry):
    i, out, logits, cache, done, gen_len, node, rng = carry
    if trie is not None:
      logits = jnp.where(trie.allowed(node, vocab), logits, _NEG_INF)
    if config.method == 'greedy':
      token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    else:
      rng, key = jax.random.split(rng)
      token = jax.random.categorical(
          key, _filter_logits(logits, config)).astype(jnp.int32)
    token = jnp.where(done, config.pad_id, token)
    out = out.at[:, i].set(token)
    gen_len = gen_len + (~done).astype(jnp.int32)
    finished = _is_stop(token, config.stop_tokens)
    if trie is not None:
      node, is_leaf = trie.advance(node, token)
      finished = finished | is_leaf
    done = done | finished
    logits, cache = _step(model, token, lengths + i, cache)
    return i + 1, out, logits, cache, done, gen_len, node, rng

  carry = (jnp.zeros((), jnp.int32), jnp.full((b, n), config.pad_id, jnp.int32),
           logits, cache, jnp.zeros((b,), bool), jnp.zeros((b,), jnp.int32),
           jnp.zeros((b,), jnp.int32), rng)
  _, out, _, _, _, gen_len, _, _ = jax.lax.while_loop(cond, body, carry)
  return GenerateOutput(tokens=out, lengths=gen_len)


def _beam_search(model, logits, cache, lengths, trie, config):
  b, vocab = logits.shape
  w, n = config.num_beams, config.max_new_tokens
  alpha = config.length_penalty
  rows = jnp.repeat(jnp.arange(b), w)
  cache = cache.gather(rows)
  logits = logits[rows]
  positions = lengths[rows]
  batch_idx = jnp.arange(b)[:, None]

  def gather(x, idx):  # x: (b, m, ...), idx: (b, k) -> (b, k, ...)
    return x[batch_idx, idx]

  def cond(carry):
    i, alive_logp, fin_scores = carry[0], carry[2], carry[5]
    # Alive beams only lose log-probability; with length normalisation the
    # best they can reach is their current log-prob over the longest length.
    bound = alive_logp[:, 0] / (float(n) ** alpha)
    can_improve = jnp.any(bound > fin_scores[:, -1])
    return (i < n) & can_improve

  def body(carry):
    (i, alive_tokens, alive_logp, alive_node, logits, fin_scores, fin_logp,
     fin_tokens, fin_len, cache) = carry
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1).reshape(b, w, vocab)
    if trie is not None:
      logp = jnp.where(trie.allowed(alive_node, vocab), logp, _NEG_INF)
    cand = (alive_logp[..., None] + logp).reshape(b, w * vocab)
    cand_logp, cand_idx = jax.lax.top_k(cand, 2 * w)
    beam = cand_idx // vocab
    token = (cand_idx % vocab).astype(jnp.int32)
    cand_tokens = gather(alive_tokens, beam)
    cand_tokens = jax.lax.dynamic_update_slice(
        cand_tokens, token[..., None], (0, 0, i))
    is_fin = _is_stop(token, config.stop_tokens) | (i == n - 1)
    cand_node = gather(alive_node, beam)
    if trie is not None:
      cand_node, is_leaf = trie.advance(cand_node, token)
      is_fin = is_fin | is_leaf

    # Finished pool: best w of old finished and newly finished candidates.
    length = (i + 1).astype(jnp.float32)
    new_scores = jnp.where(is_fin, cand_logp / length ** alpha, _NEG_INF)
    all_scores = jnp.concatenate([fin_scores, new_scores], 1)
    fin_scores, pick = jax.lax.top_k(all_scores, w)
    fin_logp = gather(jnp.concatenate(
        [fin_logp, jnp.where(is_fin, cand_logp, _NEG_INF)], 1), pick)
    fin_tokens = gather(jnp.concatenate([fin_tokens, cand_tokens], 1), pick)
    fin_len = gather(jnp.concatenate(
        [fin_len, jnp.full((b, 2 * w), i + 1, jnp.int32)], 1), pick)

    # Alive beams: best w unfinished candidates.
    alive_logp, keep = jax.lax.top_k(jnp.where(is_fin, _NEG_INF, cand_logp), w)
    alive_tokens = gather(cand_tokens, keep)
    alive_node = gather(cand_node, keep)
    parent = gather(beam, keep)
    next_token = gather(token, keep).reshape(b * w)
    cache = cache.gather((batch_idx * w + parent).reshape(b * w))
    logits, cache = _step(model, next_token, positions + i, cache)
    return (i + 1, alive_tokens, alive_logp, alive_node, logits, fin_scores,
            fin_logp, fin_tokens, fin_len, cache)

  alive_logp = jnp.where(jnp.arange(w) == 0, 0.0, _NEG_INF) * jnp.ones((b, 1))
  tokens0 = jnp.full((b, w, n), config.pad_id, jnp.int32)
  carry = (jnp.zeros((), jnp.int32), tokens0, alive_logp,
           jnp.zeros((b, w), jnp.int32), logits,
           jnp.full((b, w), _NEG_INF), jnp.full((b, w), _NEG_INF), tokens0,
           jnp.zeros((b, w), jnp.int32), cache)
  carry = jax.lax.while_loop(cond, body, carry)
  fin_scores, fin_logp, fin_tokens, fin_len = carry[5:9]
  # Tokens past a hypothesis' end are pad.
  past_end = jnp.arange(n) >= fin_len[..., None]
  fin_tokens = jnp.where(past_end, config.pad_id, fin_tokens)
  return BeamOutput(tokens=fin_tokens, scores=fin_scores, log_probs=fin_logp,
                    lengths=fin_len)
