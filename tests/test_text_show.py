"""`recjax.text.show`: sample prompts with entity marks and corpus statistics."""
import importlib.util
import textwrap

from recjax.text import show
from recjax.text import tokenizer as tokenizer_lib
from tests.datasets import require_data_dir


def test_show_synthetic(capsys):
  assert show.main(["show", "--dataset=synthetic", "--templates=calrec,p5",
                    "--num_samples=2", "--max_examples=100"]) == 0
  out = capsys.readouterr().out
  assert "⟦" in out and "⟧" in out and "▶" in out
  for key in ("examples:", "tokens_read:", "truncation_rate:", "token length histogram:",
              "history_shortened_rate:"):
    assert key in out


def test_show_config_file(tmp_path, capsys):
  root = require_data_dir("amazon_office")
  config = tmp_path / "cfg.py"
  config.write_text(textwrap.dedent(f"""
      import ml_collections
      def get_config():
        c = ml_collections.ConfigDict()
        c.data = ml_collections.ConfigDict(dict(dataset=dict(name="amazon_office"),
                                                root="{root}", split="leave_one_out"))
        c.text = ml_collections.ConfigDict(dict(templates="sequential:held_out", seq_len=256))
        return c
      """))
  assert show.main(["show", f"--config={config}", "--config.text.seq_len=300",
                    "--part=test", "--num_samples=1", "--max_examples=50"]) == 0
  out = capsys.readouterr().out
  assert "p5_seq_heldout" in out and "[held-out target:" in out
  assert "Amazon Office Products" in out


LM_CONFIG = """
from recjax import config as config_lib
def get_config():
  c = config_lib.base_config("lm")
  c.data.dataset = dict(name="synthetic", num_users=200, num_items=150, num_clusters=5, seed=0)
  c.lm.tokenizer_vocab_size = 400
  c.text.templates = "calrec,profile"
  c.text.seq_len = 256
  return c
"""


def _tokenizer_line(out):
  return next(line for line in out.splitlines() if line.startswith("tokenizer of the statistics"))


def test_show_uses_the_tokenizer_training_trains(tmp_path, capsys):
  from recjax.tasks import lm  # pylint: disable=g-import-not-at-top
  config_file = tmp_path / "lm_cfg.py"
  config_file.write_text(LM_CONFIG)
  cache = tmp_path / "cache"
  args = ["show", f"--config={config_file}", f"--tokenizer_cache={cache}", "--num_samples=1",
          "--max_examples=40"]
  assert show.main(args) == 0
  out = capsys.readouterr().out
  models = list(cache.glob("*.model"))
  assert len(models) == 1 and "training the tokenizer training would use" in out
  sp = tokenizer_lib.SentencePieceTokenizer(models[0])
  vocab = sp.add_special_tokens(tokenizer_lib.SpecialTokens())
  line = _tokenizer_line(out)
  assert str(models[0]) in line and f"(vocab {vocab:,})" in line and "tokenizer_vocab_size=400" in line
  assert show.main(args) == 0  # the cached model is reused
  assert "training the tokenizer" not in capsys.readouterr().out
  # The lm task trains the same model into its workdir; show reads it from there.
  workdir = tmp_path / "run"
  spec = importlib.util.spec_from_file_location("lm_cfg", config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  lm.LMTask(module.get_config(), str(workdir))
  trained = workdir / "tokenizer.model"
  assert trained.read_bytes() == models[0].read_bytes()
  assert show.main(args + [f"--workdir={workdir}"]) == 0
  line = _tokenizer_line(capsys.readouterr().out)
  assert str(trained) in line and "workdir" in line
  # An explicit --tokenizer wins, and the line says so.
  assert show.main(args + ["--tokenizer=byte"]) == 0
  out = capsys.readouterr().out
  assert "byte (vocab" in _tokenizer_line(out) and "--tokenizer" in _tokenizer_line(out)
