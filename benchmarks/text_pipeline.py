#!/usr/bin/env python
"""Tokens per second produced by the recjax text pipeline (render -> tokenize -> pack -> batch).

    python benchmarks/text_pipeline.py --dataset=amazon_office --tokenizer=byte
    python benchmarks/text_pipeline.py --dataset=amazon_office --tokenizer=/tmp/office_sp.model \
        --templates=calrec,p5 --seq_len=512 --batch_size=16 --worker_count=2

Reports real (non-padding) tokens/s and padded row tokens/s over `--seconds` of steady state
after `--warmup_batches`, plus the packing efficiency (real / row tokens). Compare the real
tokens/s with the trainer's tokens/s: the input pipeline must stay ahead of it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from absl import flags


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--dataset", default="amazon_office")
  parser.add_argument("--data_dir", default=os.environ.get("RECJAX_DATA_DIR", ""))
  parser.add_argument("--tokenizer", default="byte")
  parser.add_argument("--templates", default="calrec")
  parser.add_argument("--targets", default="all", choices=["last", "all"])
  parser.add_argument("--seq_len", type=int, default=512)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--num_packing_bins", type=int, default=0)
  parser.add_argument("--no_pack", action="store_true")
  parser.add_argument("--target_len", type=int, default=0)
  parser.add_argument("--objective", default="causal_lm", help="transform chain (text.objective)")
  parser.add_argument("--max_entities", type=int, default=0, help="> 0: also emit entity spans")
  parser.add_argument("--worker_count", type=int, default=0)
  parser.add_argument("--read_threads", type=int, default=0)
  parser.add_argument("--warmup_batches", type=int, default=5)
  parser.add_argument("--seconds", type=float, default=10.0)
  args = parser.parse_args(argv)
  flags.FLAGS.mark_as_parsed()  # Grain workers read absl flags

  # pylint: disable=g-import-not-at-top
  from recjax.data import registry
  from recjax.data import splits
  from recjax.text import item_text, pipeline, user_corpus
  from recjax.text import tokenizer as tokenizer_lib
  # pylint: enable=g-import-not-at-top

  t0 = time.perf_counter()
  data = registry.load_dataset({"name": args.dataset}, args.data_dir or None)
  split = splits.leave_one_out(data)
  tok = tokenizer_lib.load_tokenizer(args.tokenizer, tokenizer_lib.SpecialTokens())
  catalogue = item_text.ItemCatalogue.build(data, item_text.ItemTextConfig(), tok)
  corpus = user_corpus.UserCorpus(data, split, args.templates, targets=args.targets,
                                  catalogue=catalogue, tokenizer=tok, max_tokens=args.seq_len)
  setup_s = time.perf_counter() - t0
  config = pipeline.PipelineConfig(
      seq_len=args.seq_len, batch_size=args.batch_size, pack=not args.no_pack,
      num_packing_bins=args.num_packing_bins, num_epochs=None, target_len=args.target_len,
      worker_count=args.worker_count, read_threads=args.read_threads, objective=args.objective,
      max_entities=args.max_entities)
  it = iter(pipeline.make_text_dataset(corpus, tok, config))
  for _ in range(args.warmup_batches):
    next(it)
  real = rows = batches = 0
  start = time.perf_counter()
  while time.perf_counter() - start < args.seconds:
    batch = next(it)
    real += int((batch["segment_ids"] > 0).sum())
    rows += batch["tokens"].size
    batches += 1
  elapsed = time.perf_counter() - start
  result = {
      "dataset": args.dataset, "tokenizer": args.tokenizer, "templates": args.templates,
      "documents": len(corpus), "seq_len": args.seq_len, "batch_size": args.batch_size,
      "pack": not args.no_pack, "worker_count": args.worker_count,
      "objective": args.objective, "max_entities": args.max_entities, "setup_s": round(setup_s, 2),
      "batches_per_s": round(batches / elapsed, 2),
      "real_tokens_per_s": round(real / elapsed),
      "row_tokens_per_s": round(rows / elapsed),
      "packing_efficiency": round(real / max(rows, 1), 3),
  }
  print(json.dumps(result, indent=2))
  if hasattr(it, "close"):
    it.close()
  return 0


if __name__ == "__main__":
  sys.exit(main())
