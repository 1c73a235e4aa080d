"""Text corpora for LLM recommenders: items and users as text, with entity spans.

Modules, in data-flow order:
  item_text    item text cleaning/truncation and the catalogue index (id <-> text <-> tokens)
  templates    every prompt/target template (CALRec, profile, item, P5 families, held-out marks)
  document     the document model: text, entity spans (characters), template rendering
  user_corpus  corpora rendered from interaction data: UserCorpus, ItemCorpus
  corpora      corpora built around others: text files, answers appended, subsets; EvalCorpus
  mixture      multi-domain mixtures with rates and domain tags
  tokenizer    tokenizers with character offsets (SentencePiece, HF, bytes), special tokens
  encoding     documents -> token arrays: loss mask, entity ids/positions/kinds, token spans
  transforms   per-objective transform chains between encoding and packing (text.objective)
  infilling    GLM blank infilling (objective "glm"): entity-aware masks, Part A/B, 2D positions
  pipeline     Grain pipelines: tokenize, transform, pack, shard per host, checkpointable
  show         `python -m recjax.text show`: sample prompts and corpus statistics
  seqio_tasks  the same corpora as SeqIO tasks/mixtures (needs the `seqio` extra)
  tfds_builders  TFDS builders of the raw datasets (needs the `seqio` extra)
`python -m recjax.text` (__main__.py) is the text command line: show, tokenizer train|info.
See docs/text.md.
"""
