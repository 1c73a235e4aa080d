"""Evaluation: ranking metrics, evaluators chosen by name in config, and what they share.

- `metrics`: ranks -> Recall/HR, NDCG, MRR at K (and ranks of generated item texts).
- `batching`: host batches -> padded device batches on the data-parallel sharding (every task).
- `retrieval`: generated text or embeddings -> ranked catalogue items (exact title, BM25, dense)
  and the quasi-round-robin merge of several ranked lists into one full ranking.
- `evaluators`: the `Evaluator` protocol's spec parsing (`config.eval.evaluators`) and registry.
- `ranking`, `perplexity`: the evaluators of the sasrec and lm tasks; `calrec`: the calrec
  task's `dense`, `bm25` and `constrained` retrieval modes.

A new evaluator is a class in a new module here (copy `ranking.py`), registered by name in the
task's `EVALUATORS` table; it returns metric keys no other evaluator returns.
"""
