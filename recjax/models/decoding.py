"""Batched, jitted KV-cache decoding for `recjax.models.llm.LLM`.

`generate` prefills left-padded prompts into a fixed-size `KVCache`, then runs
a `jax.lax.while_loop` of single-token steps: greedy, temperature/top-k/top-p
sampling, or beam search (alive/finished beams, optional length
normalisation). Generation can be restricted to a catalogue of token sequences
with a `Trie`: its arrays live on device and mask the logits inside the loop.

GLM blank infilling (RecSysLLM) generates the Part-B piece of a [gMASK]:
the prompt is Part A + [sop] (bidirectional over Part A: `prefix_mask`), with
its own `positions` (inter, RoPE) and `extra_positions` (intra, the second
learned table); `PartB` gives the positions of the generated tokens, static
or dynamic (an entity trie decides, token by token, whether the
intra-position continues or restarts at 1).
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
    num_samples: For 'greedy'/'sample', continuations per prompt: the
      prompt is prefilled once and its KV cache copied to each (as HF's
      num_return_sequences); output row i * num_samples + j is prompt i's
      j-th.
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
  num_samples: int = 1
  length_penalty: float = 0.0
  stop_tokens: tuple[int, ...] = ()
  pad_id: int = 0
  cache_dtype: str | None = None

  def __post_init__(self):
    if self.method not in ('greedy', 'sample', 'beam'):
      raise ValueError(f'Unknown decoding method {self.method!r}')
    if self.length_penalty < 0:
      raise ValueError('length_penalty must be >= 0')
    if self.num_samples < 1:
      raise ValueError(f'num_samples={self.num_samples}: must be >= 1')
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
class PartB:
  """Positions of the tokens generated into a GLM Part-B piece.

  Every generated token takes its mask's inter-position `inter` (RoPE). Its
  intra-position (the model's extra position table) follows the previous
  token's, starting from `intra` (that of the prompt's last token, [sop]: 1):
  static (`entity_trie` None) counts on by one, as `part_b_intra="span"`
  training does; dynamic (RecSysLLM) reads each token against `entity_trie`,
  the trie of every catalogue entity's token sequence: a token that continues
  the entity being written counts on, one that starts an entity restarts at
  1, any other counts on (`part_b_intra="entity"` training). A token that
  could do both continues (the longer entity wins).

  Attributes:
    inter: (batch,) int RoPE position of every generated token.
    intra: (batch,) int intra-position of the prompt's last token.
    entity_trie: the entity trie for dynamic positions, or None.
  """
  inter: Array
  intra: Array
  entity_trie: Trie | None = None

  def advance(self, intra: Array, node: Array, tokens: Array) -> tuple[Array, Array]:
    """(intra-positions of `tokens`, entity-trie nodes after them) from the previous
    token's intra-position and node (0: outside any entity)."""
    if self.entity_trie is None:
      return intra + 1, node
    cont, _ = self.entity_trie.advance(node, tokens)
    continues = (node != 0) & (cont != 0)
    start, _ = self.entity_trie.advance(jnp.zeros_like(node), tokens)
    intra = jnp.where(continues | (start == 0), intra + 1, 1)
    return intra, jnp.where(continues, cont, start)


def part_b_positions(part_b: PartB, tokens: Array) -> Array:
  """(batch, n) intra-positions `generate` gives the generated `tokens` (batch, n)."""
  def step(carry, token):
    intra, node = part_b.advance(*carry, token)
    return (intra, node), intra
  init = (jnp.asarray(part_b.intra, jnp.int32), jnp.zeros_like(part_b.intra, jnp.int32))
  _, out = jax.lax.scan(step, init, jnp.asarray(tokens, jnp.int32).T)
  return out.T


@flax.struct.dataclass
class GenerateOutput:
  """Greedy/sampling result.

  Attributes:
    tokens: (batch * num_samples, max_new_tokens) generated ids, `pad_id`
      after the end.
    lengths: (batch * num_samples,) generated tokens (stop token included).
    log_probs: (batch * num_samples,) summed log-probabilities the model
      assigns to the generated tokens: its own distribution (temperature 1,
      before top-k/top-p; masked, not renormalised, under a trie).
  """
  tokens: Array
  lengths: Array
  log_probs: Array


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
             trie: Trie | None = None,
             positions: Array | np.ndarray | None = None,
             extra_positions: Array | np.ndarray | None = None,
             prefix_mask: Array | np.ndarray | None = None,
             part_b: PartB | None = None) -> GenerateOutput | BeamOutput:
  """Generates continuations of a batch of prompts.

  Args:
    model: the language model.
    prompts: (batch, prompt_len) int ids, left-padded (see `left_pad`).
    prompt_lengths: (batch,) real prompt lengths (>= 1); default prompt_len.
    config: decoding settings (static: each distinct config compiles once).
    rng: PRNG key for 'sample'.
    trie: restricts the generated tokens to the trie's sequences.
    positions: (batch, prompt_len) RoPE positions of the prompt (left-padded
      like it); default 0.. from each row's first real token.
    extra_positions: (batch, prompt_len) ids into the model's extra position
      table for the prompt (GLM intra-positions); default none.
    prefix_mask: (batch, prompt_len) 1 on the prompt tokens every prompt
      token sees (GLM Part A, bidirectional); default causal.
    part_b: positions of the generated tokens of a GLM Part-B piece; default
      those of an LM (RoPE position after the prompt, no extra position).

  Returns:
    `GenerateOutput` for greedy/sample, `BeamOutput` for beam search.
  """
  if rng is None:
    rng = jax.random.key(0)
  prompt, part_b = _prompt_inputs(prompts, prompt_lengths, positions, extra_positions,
                                  prefix_mask, part_b)
  graphdef, state = nnx.split(model)
  return _generate(graphdef, state, prompt, rng, trie, part_b, config)


def score(model: llm.LLM,
          prompts: Array | np.ndarray,
          prompt_lengths: Array | np.ndarray,
          continuations: Array | np.ndarray,
          continuation_lengths: Array | np.ndarray,
          *,
          positions: Array | np.ndarray | None = None,
          extra_positions: Array | np.ndarray | None = None,
          prefix_mask: Array | np.ndarray | None = None,
          part_b: PartB | None = None) -> Array:
  """Summed log-probabilities of several continuations of each prompt, teacher forced.

  Each prompt is prefilled once into the KV cache, which is then shared by its continuations:
  what ranking C candidate answers costs is C short forwards, not C full ones. The positions
  of the continuation tokens are those `generate` would give them (an LM's, or `part_b`'s).
  (`prefill` + `score_prefilled` do the same in steps, for continuations grouped by length.)

  Args:
    model: the language model.
    prompts: (batch, prompt_len) int ids, left-padded; `prompt_lengths` (batch,).
    continuations: (batch, C, length) int ids, right-padded; `continuation_lengths`
      (batch, C) tokens counted (a stop token included when it is part of the answer).
    positions, extra_positions, prefix_mask, part_b: as for `generate`.

  Returns:
    (batch, C) float32 log p(continuation | prompt).
  """
  b, c, n = np.shape(continuations)
  prefilled = prefill(model, prompts, prompt_lengths, n, positions=positions,
                      extra_positions=extra_positions, prefix_mask=prefix_mask, part_b=part_b)
  return score_prefilled(model, prefilled, jnp.reshape(continuations, (b * c, n)),
                         jnp.reshape(continuation_lengths, (b * c,)),
                         jnp.repeat(jnp.arange(b), c)).reshape(b, c)


@flax.struct.dataclass
class Prefilled:
  """Prompts in a KV cache with room for continuations (`prefill`, `score_prefilled`)."""

  first: Array                # (batch, vocab) logits of every continuation's first token
  cache: llm.KVCache          # the prompts, with `max_continuation` free slots
  prompt_lengths: Array       # (batch,)
  part_b: PartB | None        # as for `generate`
  max_continuation: int = flax.struct.field(pytree_node=False, default=0)


def prefill(model: llm.LLM,
            prompts: Array | np.ndarray,
            prompt_lengths: Array | np.ndarray,
            max_continuation: int,
            *,
            positions: Array | np.ndarray | None = None,
            extra_positions: Array | np.ndarray | None = None,
            prefix_mask: Array | np.ndarray | None = None,
            part_b: PartB | None = None) -> Prefilled:
  """The prompts prefilled once, for scoring continuations of up to `max_continuation`
  tokens in as many `score_prefilled` calls as the caller likes (arguments as for `score`)."""
  prompt, part_b = _prompt_inputs(prompts, prompt_lengths, positions, extra_positions,
                                  prefix_mask, part_b)
  graphdef, state = nnx.split(model)
  first, cache = _prefill_jit(graphdef, state, prompt,
                              prompt.tokens.shape[1] + int(max_continuation))
  return Prefilled(first, cache, prompt.lengths, part_b, int(max_continuation))


def score_prefilled(model: llm.LLM, prefilled: Prefilled,
                    continuations: Array | np.ndarray,
                    continuation_lengths: Array | np.ndarray,
                    rows: Array | np.ndarray) -> Array:
  """(R,) float32 log p(continuation | prompt) of continuations (R, length) of the prompts
  `rows` (R,), right-padded, `continuation_lengths` (R,) tokens counted. A call may mix the
  continuations of many prompts: grouping them by length spares padding them all to the
  longest. `length` is at most the `max_continuation` the prompts were prefilled for."""
  if np.shape(continuations)[1] > prefilled.max_continuation:
    raise ValueError(f"continuations of {np.shape(continuations)[1]} tokens but the prompts "
                     f"were prefilled for at most {prefilled.max_continuation}")
  graphdef, state = nnx.split(model)
  return _score_prefilled(graphdef, state, prefilled, jnp.asarray(continuations, jnp.int32),
                          jnp.asarray(continuation_lengths, jnp.int32),
                          jnp.asarray(rows, jnp.int32))


@functools.partial(jax.jit, static_argnames=('graphdef', 'cache_len'))
def _prefill_jit(graphdef, state, prompt, cache_len):
  return _prefill(nnx.merge(graphdef, state), prompt, cache_len, None)


@functools.partial(jax.jit, static_argnames=('graphdef',))
def _score_prefilled(graphdef, state, prefilled: Prefilled, tokens, lengths, rows):
  model = nnx.merge(graphdef, state)
  n = tokens.shape[1]
  cache = prefilled.cache.gather(rows)
  part_b = prefilled.part_b
  if part_b is None:
    rope = prefilled.prompt_lengths[rows][:, None] + jnp.arange(n)[None]
    extra = None
  else:
    rows_b = part_b.replace(inter=part_b.inter[rows], intra=part_b.intra[rows])
    rope = jnp.broadcast_to(rows_b.inter[:, None], tokens.shape)
    extra = part_b_positions(rows_b, tokens)
  out = model(tokens, positions=rope, segment_ids=jnp.ones_like(tokens), cache=cache,
              extra_positions=extra)
  # Token j is predicted by the prompt's last slot (j = 0) or by continuation token j - 1.
  logits = jnp.concatenate([prefilled.first[rows][:, None], out.logits[:, :-1]], axis=1)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
  counted = jnp.arange(n)[None] < lengths[:, None]
  return jnp.sum(jnp.where(counted, picked, 0.0), axis=1)


# ------------------------------------------------------------------------------
# Implementation.
# ------------------------------------------------------------------------------


@flax.struct.dataclass
class _Prompt:
  tokens: Array  # (b, p) left-padded
  lengths: Array  # (b,)
  positions: Array  # (b, p)
  extra_positions: Array | None  # (b, p)
  prefix_mask: Array | None  # (b, p) bool


def _prompt_inputs(prompts, prompt_lengths, positions, extra_positions, prefix_mask,
                   part_b: PartB | None) -> tuple[_Prompt, PartB | None]:
  """The device arrays of a left-padded prompt batch (`generate`'s and `score`'s arguments)."""
  prompts = jnp.asarray(prompts, jnp.int32)
  b, p = prompts.shape
  prompt_lengths = (jnp.full((b,), p, jnp.int32) if prompt_lengths is None
                    else jnp.asarray(prompt_lengths, jnp.int32))
  if positions is None:
    slot = jnp.arange(p, dtype=jnp.int32)
    positions = jnp.maximum(slot[None] - (p - prompt_lengths)[:, None], 0)
  prompt = _Prompt(tokens=prompts, lengths=prompt_lengths,
                   positions=jnp.asarray(positions, jnp.int32),
                   extra_positions=None if extra_positions is None else
                   jnp.asarray(extra_positions, jnp.int32),
                   prefix_mask=None if prefix_mask is None else
                   jnp.asarray(prefix_mask).astype(bool))
  if part_b is not None:
    part_b = part_b.replace(inter=jnp.broadcast_to(jnp.asarray(part_b.inter, jnp.int32), (b,)),
                            intra=jnp.broadcast_to(jnp.asarray(part_b.intra, jnp.int32), (b,)))
  return prompt, part_b


class _Positions:
  """Positions of the generated tokens: an LM's, or a GLM Part-B piece's."""

  def __init__(self, prompt: _Prompt, part_b: PartB | None, rows: Array | None = None):
    self.part_b = part_b
    pick = (lambda x: x) if rows is None else (lambda x: x[rows])
    self.after_prompt = pick(prompt.lengths)
    if part_b is not None:
      self.inter = pick(part_b.inter)
      self.intra0 = pick(part_b.intra)

  def init(self) -> tuple[Array, Array]:
    """(intra-position, entity node) before the first generated token."""
    if self.part_b is None:
      zero = jnp.zeros_like(self.after_prompt)
      return zero, zero
    return self.intra0, jnp.zeros_like(self.intra0)

  def advance(self, intra, node, tokens):
    if self.part_b is None:
      return intra, node
    return self.part_b.advance(intra, node, tokens)

  def rope(self, i: Array) -> Array:
    """RoPE positions of the tokens generated at step i."""
    return self.after_prompt + i if self.part_b is None else self.inter

  def extra(self, intra: Array) -> Array | None:
    return None if self.part_b is None else intra


def _prefill(model: llm.LLM, prompt: _Prompt, cache_len: int,
             cache_dtype) -> tuple[Array, llm.KVCache]:
  b, p = prompt.tokens.shape
  pad = p - prompt.lengths
  slot = jnp.arange(p, dtype=jnp.int32)
  segment_ids = (slot[None] >= pad[:, None]).astype(jnp.int32)
  cache = llm.KVCache.create(model.cfg, b, cache_len, cache_dtype)
  kwargs = {}
  if prompt.prefix_mask is not None:
    kwargs = dict(attention_mask_kind='prefix', prefix_mask=prompt.prefix_mask)
  out = model(prompt.tokens, positions=prompt.positions, segment_ids=segment_ids,
              extra_positions=prompt.extra_positions, cache=cache, return_hidden=True,
              compute_logits=False, **kwargs)
  return model.logits(out.hidden[:, -1]), out.cache


def _step(model: llm.LLM, tokens: Array, positions: Array, cache: llm.KVCache,
          extra_positions: Array | None = None) -> tuple[Array, llm.KVCache]:
  out = model(tokens[:, None], positions=positions[:, None],
              segment_ids=jnp.ones_like(tokens)[:, None], cache=cache,
              extra_positions=None if extra_positions is None else extra_positions[:, None])
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
def _generate(graphdef, state, prompt, rng, trie, part_b, config):
  model = nnx.merge(graphdef, state)
  n = config.max_new_tokens
  cache_len = prompt.tokens.shape[1] + n
  logits, cache = _prefill(model, prompt, cache_len, config.cache_dtype)
  if config.method == 'beam':
    return _beam_search(model, logits, cache, prompt, trie, part_b, config)
  rows = None
  if config.num_samples > 1:  # one prefill per prompt, its cache shared by the samples
    rows = jnp.repeat(jnp.arange(logits.shape[0]), config.num_samples)
    logits, cache = logits[rows], cache.gather(rows)
  return _sample_loop(model, logits, cache, _Positions(prompt, part_b, rows), rng, trie, config)


def _sample_loop(model, logits, cache, pos: _Positions, rng, trie, config):
  b = logits.shape[0]
  vocab = logits.shape[-1]
  n = config.max_new_tokens

  def cond(carry):
    i, _, _, _, done, *_ = carry
    return (i < n) & ~jnp.all(done)

  def body(carry):
    i, out, logits, cache, done, gen_len, log_prob, node, rng, intra, entity = carry
    model_logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
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
    picked = jnp.take_along_axis(model_logp, token[:, None], axis=-1)[:, 0]
    log_prob = log_prob + jnp.where(done, 0.0, picked)
    gen_len = gen_len + (~done).astype(jnp.int32)
    finished = _is_stop(token, config.stop_tokens)
    if trie is not None:
      node, is_leaf = trie.advance(node, token)
      finished = finished | is_leaf
    done = done | finished
    intra, entity = pos.advance(intra, entity, token)
    logits, cache = _step(model, token, pos.rope(i), cache, pos.extra(intra))
    return i + 1, out, logits, cache, done, gen_len, log_prob, node, rng, intra, entity

  carry = (jnp.zeros((), jnp.int32), jnp.full((b, n), config.pad_id, jnp.int32),
           logits, cache, jnp.zeros((b,), bool), jnp.zeros((b,), jnp.int32),
           jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.int32), rng, *pos.init())
  _, out, _, _, _, gen_len, log_prob, *_ = jax.lax.while_loop(cond, body, carry)
  return GenerateOutput(tokens=out, lengths=gen_len, log_probs=log_prob)


def _beam_search(model, logits, cache, prompt, trie, part_b, config):
  b, vocab = logits.shape
  w, n = config.num_beams, config.max_new_tokens
  alpha = config.length_penalty
  rows = jnp.repeat(jnp.arange(b), w)
  cache = cache.gather(rows)
  logits = logits[rows]
  pos = _Positions(prompt, part_b, rows)
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
     fin_tokens, fin_len, cache, intra, entity) = carry
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
    flat_parent = (batch_idx * w + parent).reshape(b * w)
    cache = cache.gather(flat_parent)
    intra, entity = pos.advance(intra[flat_parent], entity[flat_parent], next_token)
    logits, cache = _step(model, next_token, pos.rope(i), cache, pos.extra(intra))
    return (i + 1, alive_tokens, alive_logp, alive_node, logits, fin_scores,
            fin_logp, fin_tokens, fin_len, cache, intra, entity)

  alive_logp = jnp.where(jnp.arange(w) == 0, 0.0, _NEG_INF) * jnp.ones((b, 1))
  tokens0 = jnp.full((b, w, n), config.pad_id, jnp.int32)
  carry = (jnp.zeros((), jnp.int32), tokens0, alive_logp,
           jnp.zeros((b, w), jnp.int32), logits,
           jnp.full((b, w), _NEG_INF), jnp.full((b, w), _NEG_INF), tokens0,
           jnp.zeros((b, w), jnp.int32), cache, *pos.init())
  carry = jax.lax.while_loop(cond, body, carry)
  fin_scores, fin_logp, fin_tokens, fin_len = carry[5:9]
  # Tokens past a hypothesis' end are pad.
  past_end = jnp.arange(n) >= fin_len[..., None]
  fin_tokens = jnp.where(past_end, config.pad_id, fin_tokens)
  return BeamOutput(tokens=fin_tokens, scores=fin_scores, log_probs=fin_logp,
                    lengths=fin_len)
