"""The recjax text corpora as SeqIO tasks and mixtures (for T5X-style training and evaluation).

Needs the `seqio` extra (`pip install -e .[seqio]`: TensorFlow, ~2 GB); nothing else in recjax
imports this module. Example, from a SentencePiece model trained by
`python -m recjax.text tokenizer train`:

    from recjax.text import seqio_tasks
    vocab = seqio_tasks.sentencepiece_vocabulary("/tmp/office_sp.model")
    seqio_tasks.register_dataset_task("recjax_office_calrec", {"name": "amazon_office"},
                                      "../shared/data", vocab, templates="calrec")
    seqio_tasks.register_mixture("recjax_amazon_calrec",
                                 [("recjax_office_calrec", 0.6), ("recjax_sci_calrec", 0.4)])
    ds = seqio.get_mixture_or_task("recjax_office_calrec").get_dataset(
        {"inputs": 512, "targets": 128}, split="train")

Examples are {"inputs": prompt, "targets": answer} (a plain document has empty inputs and the
whole text as targets), tokenized by `seqio.preprocessors.tokenize`, with EOS appended to the
targets. Splits: "train" (the training split's examples), "validation" and "test" (evaluation
prompts; the target is the held-out item's text). Extra string features "template" and
"domain" and int feature "target_item" ride along for evaluation. The SeqIO source reads recjax
corpora directly; TFDS builders for the raw datasets are in `recjax.text.tfds_builders`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from recjax.eval import metrics
from recjax.text.document import Document
from recjax.text.user_corpus import UserCorpus

SPLIT_TO_PART = {"train": "train", "validation": "valid", "test": "test"}


def sentencepiece_vocabulary(model_path: str) -> seqio.Vocabulary:
  """A SeqIO vocabulary over a SentencePiece model (ids match recjax's SentencePieceTokenizer)."""
  return seqio.SentencePieceVocabulary(model_path)


def document_example(doc: Document) -> dict[str, Any]:
  """The SeqIO example of a recjax Document."""
  if doc.target_start == len(doc.text):  # evaluation prompt: the answer is held out
    inputs, targets = doc.text, doc.meta.get("target_text", "")
  else:
    inputs, targets = doc.text[:doc.target_start], doc.text[doc.target_start:]
  return {"inputs": inputs, "targets": targets,
          "template": doc.meta.get("template", ""), "domain": doc.meta.get("domain", ""),
          "target_item": int(doc.meta.get("target_item", doc.meta.get("item", 0)))}


_SIGNATURE = {"inputs": tf.TensorSpec((), tf.string), "targets": tf.TensorSpec((), tf.string),
              "template": tf.TensorSpec((), tf.string), "domain": tf.TensorSpec((), tf.string),
              "target_item": tf.TensorSpec((), tf.int64)}


def corpus_source(make_corpus: Callable[[str], Sequence[Document]],
                  splits: Sequence[str] = ("train", "validation", "test")
                  ) -> seqio.FunctionDataSource:
  """A SeqIO source whose split `s` is `make_corpus(part)` (part: train, valid or test).

  The corpus is built lazily on first use and its documents are read in order; `shuffle_files`
  is ignored (SeqIO shuffles examples downstream).
  """
  cache: dict[str, Sequence[Document]] = {}

  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed
    part = SPLIT_TO_PART[split]
    if part not in cache:
      cache[part] = make_corpus(part)
    corpus = cache[part]

    def generate():
      for i in range(len(corpus)):
        yield document_example(corpus[i])

    return tf.data.Dataset.from_generator(generate, output_signature=_SIGNATURE)

  return seqio.FunctionDataSource(dataset_fn, splits=list(splits))


def register_corpus_task(name: str, make_corpus: Callable[[str], Sequence[Document]],
                         vocabulary: seqio.Vocabulary,
                         splits: Sequence[str] = ("train", "validation", "test"),
                         metric_fns: Sequence[Callable[..., Any]] | None = None) -> seqio.Task:
  """Registers (replacing any task of that name) a SeqIO task over a recjax corpus factory.

  `metric_fns` defaults to recjax's ranking metrics over generated item texts (HR/NDCG/MRR@K).
  """
  if metric_fns is None:
    metric_fns = (metrics.generated_ranking_metric_fn(),)
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=corpus_source(make_corpus, splits),
      output_features={
          "inputs": seqio.Feature(vocabulary, add_eos=False, required=False),
          "targets": seqio.Feature(vocabulary, add_eos=True),
      },
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      metric_fns=list(metric_fns),
  )


def register_dataset_task(name: str, dataset: Mapping[str, Any], root: str | None,
                          vocabulary: seqio.Vocabulary, templates: str = "calrec",
                          split: str = "leave_one_out", **corpus_kwargs) -> seqio.Task:
  """A task over one registry dataset: load, split, render with `templates` (per split part).

  For evaluation parts, templates without targets are dropped by UserCorpus; select held-out
  prompts with e.g. templates="sequential:held_out" in a separate task for zero-shot evaluation.
  """
  # pylint: disable=g-import-not-at-top
  from recjax.data import registry
  from recjax.data import splits as splits_lib
  from recjax.text import item_text
  from recjax.text import templates as templates_lib
  # pylint: enable=g-import-not-at-top
  state: dict[str, Any] = {}

  def make_corpus(part: str):
    if "split" not in state:
      data = registry.load_dataset(dict(dataset), root)
      state["data"], state["split"] = data, splits_lib.make_split(data, split)
      state["catalogue"] = item_text.ItemCatalogue.build(data)
    domain = templates_lib.DOMAIN_NAMES.get(dataset.get("name", ""), state["data"].name)
    return UserCorpus(state["data"], state["split"], templates, part=part,
                      catalogue=state["catalogue"], domain=domain, **corpus_kwargs)

  return register_corpus_task(name, make_corpus, vocabulary)


def register_mixture(name: str, tasks_and_rates: Sequence[tuple[str, float]]) -> seqio.Mixture:
  """Registers (replacing) a SeqIO mixture of registered tasks with sampling rates."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  return seqio.MixtureRegistry.add(name, list(tasks_and_rates))
