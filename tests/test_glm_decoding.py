"""GLM generation (RecSysLLM inference): Part A + [sop] prompts, Part-B positions static and
dynamic (an entity trie restarts the intra-position), and the cached decode against full
forwards of the training layout."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.models import decoding
from recjax.models import llm
from recjax.objectives import glm as glm_objective

ENTITIES = [[5, 6, 7], [5, 8], [9]]


def _part_b(entities=None, intra=1, inter=0, batch=1):
  trie = None if entities is None else decoding.Trie.from_sequences(entities)
  return decoding.PartB(inter=jnp.full((batch,), inter, jnp.int32),
                        intra=jnp.full((batch,), intra, jnp.int32), entity_trie=trie)


def test_dynamic_positions_hand_traced():
  # [sop] has intra 1. 5 starts [5 6 7] -> 1; 6, 7 continue -> 2, 3; 7 ends the entity, 9
  # starts [9] -> 1; 3 is no entity -> counts on, 2; 5 starts again -> 1; 8 continues [5 8]
  # -> 2; 6 cannot continue the finished [5 8] nor start an entity -> 3.
  tokens = [[5, 6, 7, 9, 3, 5, 8, 6]]
  got = decoding.part_b_positions(_part_b(ENTITIES), jnp.asarray(tokens))
  np.testing.assert_array_equal(got, [[1, 2, 3, 1, 2, 1, 2, 3]])
  static = decoding.part_b_positions(_part_b(None), jnp.asarray(tokens))
  np.testing.assert_array_equal(static, [[2, 3, 4, 5, 6, 7, 8, 9]])


def test_dynamic_positions_prefer_continuing_the_longer_entity():
  # [5] and [5 5]: the second 5 continues [5 5] (2); the third cannot, so it starts [5] (1).
  got = decoding.part_b_positions(_part_b([[5], [5, 5]]), jnp.asarray([[5, 5, 5, 4]]))
  np.testing.assert_array_equal(got, [[1, 2, 1, 2]])


@pytest.fixture(scope="module")
def model():
  return llm.create_model("tiny_llama", seed=0, initializer_range=0.3, num_extra_positions=32)


def _prompts():
  """Two Part-A prompts of different lengths ([gMASK] = 60, [sop] = 61), left-padded, with
  their 2D positions: entity tokens of Part A carry intra 1..n."""
  rows = [
      dict(tokens=[2, 11, 12, 13, 14, 15, 60, 3, 61], intra=[0, 1, 2, 3, 0, 0, 0, 0, 1], mask=6),
      dict(tokens=[2, 21, 22, 60, 3, 61], intra=[0, 0, 1, 0, 0, 1], mask=3),
  ]
  p = max(len(r["tokens"]) for r in rows)
  out = {k: np.zeros((len(rows), p), np.int32) for k in ("tokens", "inter", "intra", "prefix")}
  lengths = np.array([len(r["tokens"]) for r in rows], np.int32)
  for i, r in enumerate(rows):
    n = len(r["tokens"])
    inter = np.append(np.arange(n - 1), r["mask"])
    for key, value in (("tokens", r["tokens"]), ("inter", inter), ("intra", r["intra"]),
                       ("prefix", np.arange(n) < n - 1)):
      out[key][i, p - n:] = value
  return rows, out, lengths


def _check_against_full_forward(model, rows, generated, intra):
  """Teacher-forced training layout of each row (Part A + [sop] + generated, inter = the mask's
  slot, intra as generated) reproduces every generated token as the argmax."""
  fwd = nnx.jit(lambda m, t, b: m(t, **glm_objective.model_kwargs(b)).logits)
  for i, r in enumerate(rows):
    n, k = len(r["tokens"]), generated.shape[1]
    tokens = np.concatenate([r["tokens"], generated[i, :-1]])
    batch = {
        "inter_positions": np.concatenate([np.arange(n - 1), np.full(k, r["mask"])]),
        "intra_positions": np.concatenate([r["intra"], intra[i, :-1]]),
        "segment_ids": np.ones(n + k - 1),
        "prefix_mask": np.arange(n + k - 1) < n - 1,
    }
    batch = {key: jnp.asarray(v[None], jnp.int32) for key, v in batch.items()}
    logits = fwd(model, jnp.asarray(tokens[None], jnp.int32), batch)
    np.testing.assert_array_equal(np.asarray(logits)[0, n - 1:].argmax(-1), generated[i])


@pytest.mark.parametrize("dynamic", [False, True])
def test_greedy_part_b_equals_argmax_of_the_training_layout(model, dynamic):
  rows, p, lengths = _prompts()
  entities = [[40, 41], [41], [7, 8, 9]] if dynamic else None
  part_b = decoding.PartB(inter=jnp.asarray([r["mask"] for r in rows]),
                          intra=jnp.ones(len(rows), jnp.int32),
                          entity_trie=None if entities is None else
                          decoding.Trie.from_sequences(entities))
  cfg = decoding.DecodeConfig(max_new_tokens=8)
  out = decoding.generate(model, p["tokens"], lengths, cfg, positions=p["inter"],
                          extra_positions=p["intra"], prefix_mask=p["prefix"], part_b=part_b)
  generated = np.asarray(out.tokens)
  intra = np.asarray(decoding.part_b_positions(part_b, out.tokens))
  _check_against_full_forward(model, rows, generated, intra)
  # A plain causal decode of the same prompts is a different function of them.
  plain = decoding.generate(model, p["tokens"], lengths, cfg)
  assert not np.array_equal(np.asarray(plain.tokens), generated)


def test_dynamic_positions_change_what_is_generated(model):
  # Forcing every row through the same token sequence (a trie constraint) and reading the
  # logits of the step after it shows the positions reach the model: with an entity trie
  # over the forced tokens the intra-positions restart, so the log-probabilities differ.
  rows, p, lengths = _prompts()
  forced = [[30, 31, 30, 31, 30, 31, 3]]
  cfg = decoding.DecodeConfig(max_new_tokens=7, method="beam", num_beams=1, stop_tokens=(3,))
  scores = []
  for entities in (None, [[30, 31]]):
    part_b = decoding.PartB(inter=jnp.asarray([r["mask"] for r in rows]),
                            intra=jnp.ones(len(rows), jnp.int32),
                            entity_trie=None if entities is None else
                            decoding.Trie.from_sequences(entities))
    out = decoding.generate(model, p["tokens"], lengths, cfg, positions=p["inter"],
                            extra_positions=p["intra"], prefix_mask=p["prefix"], part_b=part_b,
                            trie=decoding.Trie.from_sequences(forced))
    np.testing.assert_array_equal(np.asarray(out.tokens)[:, 0], np.repeat(forced, 2, 0))
    scores.append(np.asarray(out.log_probs))
  assert np.all(np.abs(scores[0] - scores[1]) > 1e-4)


def test_beam_search_with_part_b_matches_full_forward_scores(model):
  rows, p, lengths = _prompts()
  part_b = decoding.PartB(inter=jnp.asarray([r["mask"] for r in rows]),
                          intra=jnp.ones(len(rows), jnp.int32),
                          entity_trie=decoding.Trie.from_sequences(ENTITIES))
  cfg = decoding.DecodeConfig(max_new_tokens=5, method="beam", num_beams=3)
  out = decoding.generate(model, p["tokens"], lengths, cfg, positions=p["inter"],
                          extra_positions=p["intra"], prefix_mask=p["prefix"], part_b=part_b)
  fwd = nnx.jit(
      lambda m, t, b: jax.nn.log_softmax(m(t, **glm_objective.model_kwargs(b)).logits, -1))
  for i, r in enumerate(rows):
    n = len(r["tokens"])
    for beam in range(3):
      seq = np.asarray(out.tokens)[i, beam]
      intra = np.asarray(decoding.part_b_positions(
          part_b.replace(inter=part_b.inter[i:i + 1], intra=part_b.intra[i:i + 1]),
          jnp.asarray(seq[None])))[0]
      tokens = np.concatenate([r["tokens"], seq[:-1]])
      batch = {
          "inter_positions": np.concatenate([np.arange(n - 1), np.full(5, r["mask"])]),
          "intra_positions": np.concatenate([r["intra"], intra[:-1]]),
          "segment_ids": np.ones(n + 4),
          "prefix_mask": np.arange(n + 4) < n - 1,
      }
      batch = {key: jnp.asarray(v[None], jnp.int32) for key, v in batch.items()}
      logp = np.asarray(fwd(model, jnp.asarray(tokens[None], jnp.int32), batch))[0, n - 1:]
      expected = logp[np.arange(5), seq].sum()
      np.testing.assert_allclose(np.asarray(out.log_probs)[i, beam], expected, rtol=1e-4,
                                 atol=1e-4)


@pytest.mark.parametrize("dynamic", [False, True])
def test_score_equals_beam_log_probs(model, dynamic):
  # Scoring the beams' own hypotheses (prompt prefilled once, continuations teacher forced)
  # gives the log-probabilities the beam search accumulated token by token.
  rows, p, lengths = _prompts()
  part_b = decoding.PartB(inter=jnp.asarray([r["mask"] for r in rows]),
                          intra=jnp.ones(len(rows), jnp.int32),
                          entity_trie=decoding.Trie.from_sequences(ENTITIES) if dynamic else None)
  kw = dict(positions=p["inter"], extra_positions=p["intra"], prefix_mask=p["prefix"],
            part_b=part_b)
  cfg = decoding.DecodeConfig(max_new_tokens=5, method="beam", num_beams=3, stop_tokens=(3,))
  out = decoding.generate(model, p["tokens"], lengths, cfg, **kw)
  got = decoding.score(model, p["tokens"], lengths, out.tokens, out.lengths, **kw)
  np.testing.assert_allclose(got, out.log_probs, rtol=1e-4, atol=1e-4)


def test_score_of_an_lm_continuation_equals_a_full_forward(model):
  prompts, lengths = decoding.left_pad([[5, 6, 7, 8], [9, 10]])
  conts = np.array([[[11, 12, 13], [14, 15, 0]], [[16, 17, 18], [19, 0, 0]]], np.int32)
  clens = np.array([[3, 2], [3, 1]], np.int32)
  got = np.asarray(decoding.score(model, prompts, lengths, conts, clens))
  fwd = nnx.jit(lambda m, t: jax.nn.log_softmax(m(t).logits, -1))
  for i, prompt in enumerate([[5, 6, 7, 8], [9, 10]]):
    for j in range(2):
      cont = conts[i, j, :clens[i, j]].tolist()
      logp = np.asarray(fwd(model, jnp.asarray([prompt + cont])))[0, len(prompt) - 1:-1]
      np.testing.assert_allclose(got[i, j], logp[np.arange(len(cont)), cont].sum(), rtol=1e-4,
                                 atol=1e-4)


def test_score_prefilled_mixes_prompts_in_any_order(model):
  # Continuations of several prompts scored in calls of mixed rows and widths, from one
  # prefill, give what `score` gives each prompt's own continuations.
  rows, p, lengths = _prompts()
  part_b = decoding.PartB(inter=jnp.asarray([r["mask"] for r in rows]),
                          intra=jnp.ones(len(rows), jnp.int32),
                          entity_trie=decoding.Trie.from_sequences(ENTITIES))
  kw = dict(positions=p["inter"], extra_positions=p["intra"], prefix_mask=p["prefix"],
            part_b=part_b)
  conts = np.array([[[5, 6, 7, 3, 0], [9, 3, 0, 0, 0], [5, 8, 9, 4, 3]],
                    [[4, 3, 0, 0, 0], [5, 6, 3, 0, 0], [9, 9, 9, 9, 3]]], np.int32)
  clens = np.array([[4, 2, 5], [2, 3, 5]], np.int32)
  want = np.asarray(decoding.score(model, p["tokens"], lengths, conts, clens, **kw))
  prefilled = decoding.prefill(model, p["tokens"], lengths, 5, **kw)
  for group in ([(1, 0), (0, 1)], [(0, 0), (1, 1), (0, 2)], [(1, 2)]):
    width = max(int(clens[r, j]) for r, j in group)
    got = decoding.score_prefilled(model, prefilled,
                                   np.stack([conts[r, j, :width] for r, j in group]),
                                   np.array([clens[r, j] for r, j in group]),
                                   np.array([r for r, _ in group]))
    np.testing.assert_allclose(got, [want[r, j] for r, j in group], rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="prefilled for at most 5"):
    decoding.score_prefilled(model, prefilled, np.zeros((1, 6), np.int32), np.ones(1, np.int32),
                             np.zeros(1, np.int32))
