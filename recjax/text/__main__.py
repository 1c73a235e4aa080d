r"""The text command line: inspect corpora, train and inspect tokenizers.

    python -m recjax.text show --config=configs/lm.py [--workdir=DIR] [--num_samples=3]
    python -m recjax.text show --dataset=amazon_office --templates=calrec,p5 --tokenizer=byte
    python -m recjax.text tokenizer train --dataset=amazon_office --vocab_size=8000 \
        --output=/tmp/office_sp          # writes /tmp/office_sp.model and /tmp/office_sp.json
    python -m recjax.text tokenizer info --tokenizer=/tmp/office_sp.model --semantic_codes=256

`COMMAND --help` describes each command's flags.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Sequence

COMMANDS = ("show", "tokenizer")


def _training_texts(dataset: str, data_dir: str, corpora: Sequence[str],
                    max_history_items: int) -> Iterable[str]:
  """Texts of the named corpora of one dataset, from the training split only."""
  # pylint: disable=g-import-not-at-top
  from recjax.data import registry
  from recjax.data import splits
  from recjax.text import item_text
  from recjax.text import user_corpus
  # pylint: enable=g-import-not-at-top
  data = registry.load_dataset({"name": dataset}, data_dir)
  catalogue = item_text.ItemCatalogue.build(data, item_text.ItemTextConfig.full())
  if "items" in corpora:
    yield from catalogue.texts[1:]
  split = splits.leave_one_out(data)
  for name in corpora:
    if name == "items":
      continue
    corpus = user_corpus.UserCorpus(data, split, templates=name, part="train", targets="last",
                                    max_history_items=max_history_items)
    for i in range(len(corpus)):
      yield corpus[i].text


def _tokenizer_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m recjax.text tokenizer",
      description="Train a SentencePiece model on recjax text, or inspect a tokenizer.")
  sub = parser.add_subparsers(dest="command", required=True)
  train = sub.add_parser("train", help="train a SentencePiece model on a recjax text corpus")
  train.add_argument("--dataset", required=True, action="append",
                     help="dataset name (repeat for several), e.g. amazon_office")
  train.add_argument("--data_dir", default=os.environ.get("RECJAX_DATA_DIR", ""),
                     help="root of the datasets (default: $RECJAX_DATA_DIR)")
  train.add_argument("--corpus", default="items,calrec",
                     help="comma list of 'items' and template families/names (default: "
                          "items,calrec)")
  train.add_argument("--vocab_size", type=int, default=8000)
  train.add_argument("--model_type", default="unigram", choices=["unigram", "bpe"])
  train.add_argument("--max_history_items", type=int, default=20)
  train.add_argument("--output", required=True, help="output prefix; writes <output>.model")
  info = sub.add_parser("info", help="print vocabulary size and special-token ids")
  info.add_argument("--tokenizer", required=True, help="'byte', a .model or a tokenizer.json")
  info.add_argument("--semantic_codes", type=int, default=0)
  info.add_argument("--text", default="", help="optional text to encode")
  return parser


def tokenizer_main(argv: Sequence[str]) -> int:
  """`python -m recjax.text tokenizer train|info ...`."""
  from recjax.text import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
  parser = _tokenizer_parser()
  try:
    args = parser.parse_args(list(argv))
  except SystemExit as e:  # --help (0) or a usage error (2), already printed
    return int(e.code or 0)
  if args.command == "train":
    if not args.data_dir:
      print("error: --data_dir (or $RECJAX_DATA_DIR) is required", file=sys.stderr)
      return 2
    corpora = [c for c in args.corpus.split(",") if c]
    texts = (t for name in args.dataset
             for t in _training_texts(name, args.data_dir, corpora, args.max_history_items))
    path = tokenizer_lib.train_sentencepiece(texts, args.output, args.vocab_size,
                                             model_type=args.model_type)
    tok = tokenizer_lib.SentencePieceTokenizer(path)
    base = tok.vocab_size
    total = tok.add_special_tokens(tokenizer_lib.SpecialTokens())
    meta = {"model": str(path), "datasets": args.dataset, "corpora": corpora,
            "requested_vocab_size": args.vocab_size, "vocab_size": base,
            "vocab_size_with_special_tokens": total, "model_type": args.model_type}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    return 0

  tok = tokenizer_lib.load_tokenizer(args.tokenizer)
  base = tok.vocab_size
  total = tok.add_special_tokens(
      tokenizer_lib.SpecialTokens(num_semantic_codes=args.semantic_codes))
  print(f"tokenizer: {args.tokenizer}\nbase vocab size: {base}\nwith special tokens: {total}")
  print(f"pad {tok.pad_id}  bos {tok.bos_id}  eos {tok.eos_id}  unk {tok.unk_id}")
  for token, token_id in list(tok.special_tokens.items())[:12]:
    print(f"  {token!r}: {token_id}")
  if args.text:
    enc = tok.encode(args.text)
    print("ids:", enc.ids.tolist())
    print("offsets:", enc.offsets.tolist())
    print("decoded:", tok.decode(enc.ids))
  return 0


def main(argv: Sequence[str]) -> int:
  """Dispatches `argv` (without the program name) to a command; returns the exit status."""
  argv = list(argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(f"usage: python -m recjax.text {{{','.join(COMMANDS)}}} ...\n{__doc__}",
          file=sys.stdout if argv else sys.stderr)
    return 0 if argv else 2
  if argv[0] == "show":
    from recjax.text import show  # pylint: disable=g-import-not-at-top
    return show.main(["python -m recjax.text show"] + argv[1:])
  if argv[0] == "tokenizer":
    return tokenizer_main(argv[1:])
  print(f"unknown command {argv[0]!r}; usage: python -m recjax.text {{{','.join(COMMANDS)}}} "
        f"...\n{__doc__}", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
