"""Text corpora for LLM recommenders: items and users as text, with entity spans.

Modules, in data-flow order:
  item_text  item text cleaning/truncation and the catalogue index (id <-> text <-> tokens)
  templates  every prompt/target template (CALRec, profile, item, P5 families, held-out marks)
  render     Documents with entity spans; UserCorpus / ItemCorpus; token-level entity arrays
  mixture    multi-domain mixtures with rates and domain tags
  pipeline   Grain pipelines: tokenize, pack, shard per host, checkpointable iterators
  show       `python -m recjax.data show`: sample prompts and corpus statistics
  seqio_tasks  the same corpora as SeqIO tasks/mixtures (needs the `seqio` extra)
See docs/text.md.
"""
