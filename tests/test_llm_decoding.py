"""KV-cache decoding: greedy, sampling, beam search, stop tokens and trie constraints."""
import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.models import decoding
from recjax.models import llm

N = 8  # New tokens.
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14]]
ALLOWED = [[1, 2, 3], [1, 2, 4], [1, 5], [7, 8, 9, 10], [20, 21, 22, 23, 24]]


@pytest.fixture(scope='module')
def model():
  # Gemma 3 layout: sliding-window layers make the cache bookkeeping matter.
  return llm.create_model('tiny_gemma3', seed=0, initializer_range=0.2)


@pytest.fixture(scope='module')
def prompts():
  return decoding.left_pad(PROMPTS)


@pytest.fixture(scope='module')
def log_probs(model):
  """Per-token log-probabilities of full (uncached) forwards, one prompt at a time."""
  fn = nnx.jit(lambda m, t: jax.nn.log_softmax(m(t).logits, -1))

  def run(row: int, continuations: np.ndarray) -> np.ndarray:
    """(k, N) continuations of PROMPTS[row] -> (k, N, vocab) log-probs."""
    prompt = np.asarray(PROMPTS[row])
    seqs = np.concatenate(
        [np.broadcast_to(prompt, (len(continuations), len(prompt))),
         continuations], 1)
    return np.asarray(fn(model, jnp.asarray(seqs)))[:, len(prompt) - 1:-1]
  return run


@pytest.fixture(scope='module')
def greedy(model, prompts):
  return decoding.generate(model, *prompts, decoding.DecodeConfig(max_new_tokens=N))


def test_cached_greedy_equals_argmax_of_full_forwards(greedy, log_probs):
  tokens = np.asarray(greedy.tokens)
  assert (np.asarray(greedy.lengths) == N).all()
  for row in range(len(PROMPTS)):
    lp = log_probs(row, tokens[row:row + 1])[0]
    np.testing.assert_array_equal(lp.argmax(-1), tokens[row])


def test_sampling_with_top_k_1_is_greedy(model, prompts, greedy):
  out = decoding.generate(
      model, *prompts,
      decoding.DecodeConfig(max_new_tokens=N, method='sample', top_k=1,
                            temperature=0.7),
      rng=jax.random.key(3))
  np.testing.assert_array_equal(out.tokens, greedy.tokens)


def test_top_p_sampling_stays_in_the_nucleus(model, prompts, log_probs):
  config = decoding.DecodeConfig(max_new_tokens=N, method='sample', top_p=0.5)
  a = np.asarray(decoding.generate(model, *prompts, config,
                                   rng=jax.random.key(0)).tokens)
  b = np.asarray(decoding.generate(model, *prompts, config,
                                   rng=jax.random.key(1)).tokens)
  assert (a != b).any()
  for row in range(len(PROMPTS)):
    lp = log_probs(row, a[row:row + 1])[0]
    probs = np.exp(lp)
    for step, tok in enumerate(a[row]):
      p = probs[step]
      mass_above = p[p > p[tok]].sum()
      assert mass_above < 0.5 + 1e-5


def test_samples_share_one_prefill_and_report_model_log_probs(model, prompts,
                                                              log_probs):
  """num_samples=K equals sampling K repeated prompt rows (one prefill each)."""
  k, key = 3, jax.random.key(5)
  config = decoding.DecodeConfig(max_new_tokens=N, method='sample', temperature=1.5,
                                 stop_tokens=(7,), pad_id=0)
  shared = decoding.generate(
      model, *prompts, dataclasses.replace(config, num_samples=k), rng=key)
  repeated = decoding.generate(model, np.repeat(prompts[0], k, 0),
                               np.repeat(prompts[1], k), config, rng=key)
  tokens, lengths = np.asarray(shared.tokens), np.asarray(shared.lengths)
  assert tokens.shape == (len(PROMPTS) * k, N)
  np.testing.assert_array_equal(tokens, repeated.tokens)
  np.testing.assert_array_equal(lengths, repeated.lengths)
  assert len({tuple(t) for t in tokens[:k]}) > 1  # the samples of one prompt differ
  for row in range(len(PROMPTS)):  # summed log-probs at temperature 1 (not 1.5)
    conts = tokens[row * k:(row + 1) * k]
    lp = log_probs(row, conts)
    picked = np.take_along_axis(lp, conts[..., None], -1)[..., 0]
    counted = np.arange(N)[None] < lengths[row * k:(row + 1) * k, None]
    np.testing.assert_allclose(np.asarray(shared.log_probs)[row * k:(row + 1) * k],
                               np.where(counted, picked, 0).sum(1), rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match='num_samples=0'):
    decoding.DecodeConfig(method='sample', num_samples=0)


def test_stop_tokens_end_rows(model, prompts, greedy):
  stop = int(np.asarray(greedy.tokens)[0, 2])
  out = decoding.generate(
      model, *prompts,
      decoding.DecodeConfig(max_new_tokens=N, stop_tokens=(stop,), pad_id=0))
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  first = list(np.asarray(greedy.tokens)[0]).index(stop)
  assert lengths[0] == first + 1
  np.testing.assert_array_equal(tokens[0, :first + 1],
                                np.asarray(greedy.tokens)[0, :first + 1])
  assert (tokens[0, first + 1:] == 0).all()


@pytest.mark.parametrize('length_penalty', [0.0, 1.0])
def test_beam_scores_are_model_log_probs(model, prompts, log_probs,
                                         length_penalty):
  out = decoding.generate(
      model, *prompts,
      decoding.DecodeConfig(max_new_tokens=N, method='beam', num_beams=3,
                            length_penalty=length_penalty))
  tokens, scores = np.asarray(out.tokens), np.asarray(out.scores)
  for row in range(len(PROMPTS)):
    lp = log_probs(row, tokens[row])
    summed = np.take_along_axis(lp, tokens[row][..., None], -1)[..., 0].sum(-1)
    np.testing.assert_allclose(out.log_probs[row], summed, atol=1e-4)
    np.testing.assert_allclose(scores[row], summed / N ** length_penalty,
                               atol=1e-4)
    assert (np.diff(scores[row]) <= 1e-6).all()  # Best first.
    assert len({tuple(t) for t in tokens[row]}) == 3


def test_trie_arrays():
  trie = decoding.Trie.from_sequences(ALLOWED + [[1, 2, 3]])
  assert trie.max_children == 3  # The root's children: 1, 7, 20.
  mask = np.asarray(trie.allowed(jnp.array([0]), 32))[0]
  assert set(np.flatnonzero(mask)) == {1, 7, 20}
  node, leaf = trie.advance(jnp.array([0]), jnp.array([1]))
  node, leaf = trie.advance(node, jnp.array([2]))
  assert set(np.flatnonzero(np.asarray(trie.allowed(node, 32))[0])) == {3, 4}
  _, leaf = trie.advance(node, jnp.array([4]))
  assert bool(leaf[0])


@pytest.mark.parametrize('method', ['greedy', 'beam'])
def test_constrained_decoding_yields_only_allowed_sequences(model, prompts, method):
  trie = decoding.Trie.from_sequences(ALLOWED)
  out = decoding.generate(
      model, *prompts,
      decoding.DecodeConfig(max_new_tokens=N, method=method, num_beams=4),
      trie=trie)
  allowed = {tuple(s) for s in ALLOWED}
  if method == 'greedy':
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    for row in range(len(PROMPTS)):
      assert tuple(tokens[row, :lengths[row]]) in allowed
      assert (tokens[row, lengths[row]:] == 0).all()
  else:
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    for row in range(len(PROMPTS)):
      found = {tuple(tokens[row, k, :lengths[row, k]]) for k in range(4)}
      assert found <= allowed and len(found) == 4
      assert np.isfinite(np.asarray(out.scores)[row]).all()


def test_constrained_beam_search_ranks_the_whole_catalogue(model, prompts, log_probs):
  """With as many beams as allowed sequences, beam search scores them all exactly."""
  trie = decoding.Trie.from_sequences(ALLOWED)
  out = decoding.generate(
      model, *prompts,
      decoding.DecodeConfig(max_new_tokens=N, method='beam', num_beams=len(ALLOWED)),
      trie=trie)
  padded = np.zeros((len(ALLOWED), N), np.int32)
  for k, s in enumerate(ALLOWED):
    padded[k, :len(s)] = s
  for row in range(len(PROMPTS)):
    lp = log_probs(row, padded)
    exact = {tuple(s): sum(lp[k, i, t] for i, t in enumerate(s))
             for k, s in enumerate(ALLOWED)}
    got = {tuple(np.asarray(out.tokens)[row, k, :np.asarray(out.lengths)[row, k]]):
           float(np.asarray(out.log_probs)[row, k]) for k in range(len(ALLOWED))}
    assert got.keys() == exact.keys()
    for seq, value in got.items():
      assert value == pytest.approx(exact[seq], abs=1e-4)
