"""`recjax.text.show`: sample prompts with entity marks and corpus statistics."""
import textwrap

from recjax.text import show
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
