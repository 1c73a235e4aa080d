"""Synthetic recommendation curriculum (SPECS.md §3): semantic IDs, grounding corpora, walks.

- `embeddings`: item-text embeddings (TF-IDF + truncated SVD; offline wordllama).
- `semantic_ids`: residual k-means (RQ-KMeans) codes plus a collision level, rendered as tokens.
- `cooccurrence`: association rules mined from training sequences, and item-text alignment
  sentences (layer 1, grounding).
- `walks`: node2vec second-order random walks on the training co-occurrence graph (layer 2,
  synthetic user histories), sharded and deterministic per (seed, shard).

docs/curriculum.md lists every knob with its default, and what is not built yet.
"""
