"""Inspect a text corpus: sample prompts with entity spans marked, and corpus statistics.

    python -m recjax.text show --config=configs/lm.py --num_samples=3 [--workdir=DIR]
    python -m recjax.text show --dataset=amazon_office --templates=p5 --tokenizer=byte

Entities are shown as ⟦...⟧ and the target (where the loss is) follows a "▶" mark; with
`--config.text.objective=glm` each sample is also shown corrupted (Part A, the Part-B pieces and
the 2D positions, recjax.text.infilling). Statistics:
examples, tokens, a histogram of document lengths, the share of documents longer than
`seq_len` (the pipeline truncates those), and the share of histories shortened by the budget.

Token statistics use the tokenizer training would use: the `tokenizer.json` of a Hugging Face
directory in `init_from.path` (or `model.hf_checkpoint`); with `lm.tokenizer_vocab_size > 0`
the SentencePiece model the lm task trains into its workdir, read from `--workdir` when that run
has one, else trained here the same way into `--tokenizer_cache` (reused next time); otherwise
`text.tokenizer`. `--tokenizer=NAME` overrides all of these. The first output line names the
one used.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import pathlib
import sys
import tempfile
from typing import Sequence

from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np

from recjax.text import encoding
from recjax.text import infilling
from recjax.text import pipeline

# The file the lm task trains its SentencePiece model into (recjax/tasks/lm.py TOKENIZER_FILE).
WORKDIR_TOKENIZER = "tokenizer.model"


def _flag_values(argv: list[str]) -> flags.FlagValues:
  fv = flags.FlagValues()
  # `sys_argv` tells ml_collections which --config.x.y overrides to define.
  config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:arg]).",
                                  flag_values=fv, lock_config=False, sys_argv=argv)
  flags.DEFINE_string("dataset", "", "Dataset name when no --config is given.", flag_values=fv)
  flags.DEFINE_string("data_dir", os.environ.get("RECJAX_DATA_DIR", ""), "Data root.",
                      flag_values=fv)
  flags.DEFINE_string("templates", "", "Override config.text.templates.", flag_values=fv)
  flags.DEFINE_string("tokenizer", "", "Tokenizer of the statistics ('byte', a .model, a "
                      "tokenizer.json); default: the one training would use.", flag_values=fv)
  flags.DEFINE_string("workdir", "", "A recjax.main workdir whose trained tokenizer.model to "
                      "use (configs with lm.tokenizer_vocab_size > 0).", flag_values=fv)
  flags.DEFINE_string("tokenizer_cache",
                      os.environ.get("RECJAX_CACHE_DIR", "~/.cache/recjax") + "/tokenizers",
                      "Where a tokenizer trained for the statistics is kept.", flag_values=fv)
  flags.DEFINE_string("part", "train", "train | valid | test.", flag_values=fv)
  flags.DEFINE_integer("num_samples", 3, "Rendered examples to print.", flag_values=fv)
  flags.DEFINE_integer("max_examples", 2000, "Examples the statistics read (0: all).",
                       flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Which samples are shown.", flag_values=fv)
  return fv


def config_from_flags(fv: flags.FlagValues) -> ml_collections.ConfigDict:
  """`--config` (with a `text` block filled in from defaults) or one built from --dataset."""
  if fv.config is not None:
    config = ml_collections.ConfigDict(fv.config.to_dict())
  else:
    if not fv.dataset:
      raise ValueError("give --config=... or --dataset=NAME")
    config = ml_collections.ConfigDict()
    config.data = ml_collections.ConfigDict(dict(
        dataset={"name": fv.dataset}, root="", split="leave_one_out"))
  text = pipeline.default_config()
  if "text" in config:
    text.update(config.text)
  config.text = text
  if fv.data_dir and not config.data.get("root", ""):
    config.data.root = fv.data_dir
  if fv.templates:
    config.text.templates = fv.templates
  return config


def resolve_tokenizer(config: ml_collections.ConfigDict, tokenizer: str = "",
                      workdir: str = "", cache_dir: str = "") -> tuple[str, str]:
  """(tokenizer path or "byte", where it comes from) as training with `config` would use it.

  Sets `config.text.tokenizer` to the path. May train a SentencePiece model into `cache_dir`.
  """
  lm = config.get("lm", {})
  # A Hugging Face directory to start from (init_from.path, or its older alias) brings its own.
  hf_dir = config.get("model", {}).get("hf_checkpoint", "")
  init_path = str(config.get("init_from", {}).get("path", "") or "")
  if not hf_dir and init_path and os.path.isfile(os.path.join(init_path, "tokenizer.json")):
    hf_dir = init_path
  vocab = int(lm.get("tokenizer_vocab_size", 0)) if lm else 0
  if tokenizer:
    config.text.tokenizer, source = tokenizer, "--tokenizer"
  elif hf_dir:
    config.text.tokenizer = os.path.join(hf_dir, "tokenizer.json")
    source = "the Hugging Face checkpoint's tokenizer, as training uses"
  elif vocab > 0 and workdir and (pathlib.Path(workdir) / WORKDIR_TOKENIZER).is_file():
    config.text.tokenizer = str(pathlib.Path(workdir) / WORKDIR_TOKENIZER)
    source = "the workdir's trained SentencePiece model, as training uses"
  elif vocab > 0:
    path = _cached_tokenizer(config, cache_dir)
    config.text.tokenizer = str(path)
    source = (f"the SentencePiece model of lm.tokenizer_vocab_size={vocab}, trained as "
              "recjax.main trains it and cached; --workdir=DIR reads a run's own")
  else:
    source = "config.text.tokenizer, as training uses"
  return str(config.text.tokenizer), source


def _cached_tokenizer(config: ml_collections.ConfigDict, cache_dir: str) -> pathlib.Path:
  """The model `pipeline.train_tokenizer` makes for `config`, trained once per distinct input."""
  lm = config.lm
  key = json.dumps({"data": config.data.to_dict(), "text": config.text.to_dict(),
                    "seed": config.get("seed", 0), "text_file": lm.get("text_file", ""),
                    "vocab": int(lm.tokenizer_vocab_size),
                    "max_documents": int(lm.get("tokenizer_max_documents", 0))},
                   sort_keys=True, default=str)
  name = f"sp_{hashlib.sha256(key.encode()).hexdigest()[:16]}.model"
  path = pathlib.Path(cache_dir or "~/.cache/recjax/tokenizers").expanduser() / name
  if not path.is_file():
    print(f"training the tokenizer training would use into {path} (once) ...", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:  # concurrent shows: no torn file
      os.replace(pipeline.train_tokenizer(config, pathlib.Path(tmp) / name), path)
  return path


def corpus_stats(corpus, tokenizer, seq_len: int, max_examples: int = 0,
                 seed: int = 0) -> dict[str, object]:
  """Statistics of (a uniform sample of) a corpus's documents."""
  n = len(corpus)
  rng = np.random.default_rng(seed)
  idx = (np.sort(rng.choice(n, max_examples, replace=False))
         if max_examples and max_examples < n else np.arange(n))
  lengths, target_tokens, entities, shortened = [], [], [], 0
  templates = collections.Counter()
  for i in idx:
    doc = corpus[int(i)]
    arrays = encoding.encode_document(doc, tokenizer)
    lengths.append(len(arrays["tokens"]))
    target_tokens.append(int(arrays["loss_mask"].sum()))
    entities.append(len(doc.spans))
    templates[doc.meta.get("template", "?")] += 1
    available = doc.meta.get("available_history_items")
    if available is not None and doc.meta.get("history_items", available) < available:
      shortened += 1
  lengths = np.asarray(lengths)
  edges = [0, 32, 64, 128, 256, 512, 1024, 2048, 4096, np.inf]
  hist, _ = np.histogram(lengths, bins=edges)
  return {
      "examples": n,
      "examples_read": len(idx),
      "tokens_read": int(lengths.sum()),
      "estimated_tokens": int(lengths.mean() * n) if len(lengths) else 0,
      "mean_tokens": float(lengths.mean()) if len(lengths) else 0.0,
      "p50_tokens": float(np.percentile(lengths, 50)) if len(lengths) else 0.0,
      "p95_tokens": float(np.percentile(lengths, 95)) if len(lengths) else 0.0,
      "max_tokens": int(lengths.max()) if len(lengths) else 0,
      "mean_loss_tokens": float(np.mean(target_tokens)) if target_tokens else 0.0,
      "mean_entities": float(np.mean(entities)) if entities else 0.0,
      "truncation_rate": float(np.mean(lengths > seq_len)) if len(lengths) else 0.0,
      "history_shortened_rate": shortened / max(1, len(idx)),
      "histogram": [(f"{lo:g}-{hi:g}", int(c)) for lo, hi, c in zip(edges[:-1], edges[1:], hist)],
      "templates": dict(templates),
  }


def format_doc(doc) -> str:
  """A document with entities in ⟦...⟧ and "▶" where the target starts."""
  marked = doc.marked()
  if 0 < doc.target_start < len(doc.text):
    # Entity marks shift positions; count the marks before the target start.
    shift = 2 * sum(1 for s in doc.spans if s.end <= doc.target_start)
    shift += sum(1 for s in doc.spans if s.start < doc.target_start < s.end)
    cut = doc.target_start + shift
    marked = marked[:cut] + "▶" + marked[cut:]
  elif doc.target_start == len(doc.text) and doc.meta.get("target_text"):
    marked += f"\n[held-out target: {doc.meta['target_text']}]"
  return marked


def main(argv: Sequence[str] | None = None) -> int:
  """Prints sample documents and statistics; `argv` as in sys.argv (non-flag words ignored)."""
  argv = list(sys.argv if argv is None else argv)
  prog = argv[0] if argv else "show"
  argv = [prog] + [a for a in argv[1:] if a.startswith("-")]
  if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
    print(f"usage: {prog} [--config=FILE[:ARG] [--config.KEY=VALUE ...] | --dataset=NAME] "
          "[flags]\n" + __doc__)
    print(_flag_values([prog]).get_help(include_special_flags=False))
    return 0
  fv = _flag_values(argv)
  fv(argv)
  config = config_from_flags(fv)
  name, source = resolve_tokenizer(config, fv.tokenizer, fv.workdir, fv.tokenizer_cache)
  tokenizer = pipeline.build_tokenizer(config.text)
  print(f"tokenizer of the statistics: {name} (vocab {tokenizer.vocab_size:,}): {source}")
  corpus = pipeline.build_corpus(config, part=fv.part, tokenizer=tokenizer)
  print(f"corpus: {type(corpus).__name__}, {len(corpus):,} documents")
  if hasattr(corpus, "describe"):
    print(corpus.describe())
  if getattr(corpus, "skipped", None):
    print("skipped templates:", corpus.skipped)
  rng = np.random.default_rng(fv.seed)
  glm = None
  if str(config.text.get("objective", "causal_lm")) == "glm":
    glm = infilling.BlankInfilling(tokenizer, infilling.GLMConfig.from_config(config.text.glm),
                                   int(config.text.seq_len))
  for i in rng.choice(len(corpus), min(fv.num_samples, len(corpus)), replace=False):
    doc = corpus[int(i)]
    meta = {k: doc.meta[k] for k in ("template", "domain", "user", "target_item", "held_out")
            if k in doc.meta}
    print(f"\n--- example {int(i)} {meta}")
    print(format_doc(doc))
    if glm is not None:
      example = pipeline.EncodeDocument(tokenizer).map(doc)
      print("GLM blank infilling:\n" + infilling.format_example(glm.random_map(example, rng),
                                                                tokenizer))
  stats = corpus_stats(corpus, tokenizer, int(config.text.seq_len), fv.max_examples, fv.seed)
  print("\n--- statistics" + (f" (from {stats['examples_read']:,} examples)"
                              if stats["examples_read"] < stats["examples"] else ""))
  for key, value in stats.items():
    if key == "histogram":
      print("token length histogram:")
      width = max(c for _, c in value) or 1
      for label, count in value:
        print(f"  {label:>10} {count:7d} {'#' * int(40 * count / width)}")
    else:
      print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
