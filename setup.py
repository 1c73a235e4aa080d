"""recjax: LLM-for-recommendation research in JAX/Flax NNX."""
import setuptools

CORE = [
    "jax>=0.10",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "grain>=0.2.18",
    "ml_collections>=1.1",
    "gin-config>=0.5",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "absl-py>=2.1",
    "numpy>=2.0",
    "bm25s>=0.3",  # BM25 retrieval of catalogue items from generated text (recjax/eval)
    "sacrebleu>=2.4",  # BLEU of generated explanations / review summaries (recjax/eval/p5.py)
    "rouge-score>=0.1.2",  # ROUGE-1/2/L of the same (recjax/eval/p5.py)
]
HF = [
    "safetensors>=0.4",
    "tokenizers>=0.20",
    "sentencepiece==0.2.2",  # 0.2.3 ships protobuf-7 code that breaks seqio (DESIGN.md)
]
# tensorflow-datasets imports importlib_resources without declaring it (tensorflow/datasets#11212).
SEQIO = ["seqio", "tensorflow-datasets", "importlib_resources", "sentencepiece==0.2.2"]
# recjax/curriculum (semantic IDs: TF-IDF+SVD and k-means; offline wordllama embeddings, which
# ship inside the ~19 MB wheel) and recjax/scaling (power-law fits with curve_fit).
CURRICULUM = ["scikit-learn>=1.5", "scipy>=1.11", "wordllama>=0.4"]
# xmanager's dependency tree makes pip backtrack for many minutes through google-cloud
# versions; these pins (a set that resolves) cut it short. protobuf < 7: xmanager's bound.
LAUNCH = ["xmanager>=0.8.5", "protobuf>=6.33.5,<7", "google-cloud-bigquery==3.47.0",
          "google-api-core==2.40.0"]
# libtpu (~700 MB installed) for `python -m recjax.compile` (AOT compilation for TPU topologies
# on any host) and for running on TPU VMs; pinned to the jax the core resolves to (libtpu is
# per-jax). Without a TPU, jax falls back to the CPU after libtpu's warnings (~4 s).
TPU = ["jax[tpu]==0.10.2"]
# recjax.workdir.plot_metrics and docs/notebooks/ (Colab has it already).
NOTEBOOK = ["matplotlib"]
# TPU: tests/test_compile.py compiles for v5p; LAUNCH: tests/test_launch.py builds xm objects.
TEST = HF + CURRICULUM + NOTEBOOK + TPU + LAUNCH + [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "torch==2.13.0",  # the CPU wheel on disk; an unpinned torch pulls GBs of CUDA packages
    "transformers>=4.50",
    "nbclient", "nbformat", "ipykernel",  # tests/test_notebook.py runs the notebook on a kernel
] + SEQIO  # the SeqIO/TFDS adapters are tested too (+~30 s install, TensorFlow CPU)
TENSORBOARD = ["tensorboard"]  # the UI only: recjax writes event files with tensorboardX

setuptools.setup(
    name="recjax",
    version="0.1.0",
    description="JAX/Flax NNX framework for LLM-based and ID-based sequential recommendation",
    packages=setuptools.find_packages(include=["recjax", "recjax.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={"test": TEST, "hf": HF, "seqio": SEQIO, "launch": LAUNCH,
                    "tpu": TPU, "notebook": NOTEBOOK, "curriculum": CURRICULUM,
                    "tensorboard": TENSORBOARD},
)
