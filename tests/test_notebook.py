"""docs/notebooks/evaluate_checkpoint.ipynb executed by nbclient on a real python3 kernel.

Its "parameters" cell is replaced (as papermill would) to point at the workdirs that
tests/test_workdir.py trains; the outputs are checked against those workdirs' results.json and
against recjax.workdir called here directly.
"""
import base64
import json

import pytest

from tests.cli_utils import REPO, run_main_env
from tests.test_workdir import lm, lm_workdir, sasrec, sasrec_workdir  # noqa: F401 (fixtures)

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOK = REPO / "docs" / "notebooks" / "evaluate_checkpoint.ipynb"


def _parameters_cell(nb):
  (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  return cell


def _code_cell(nb, marker):
  (cell,) = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
  return cell


def _notebook(**parameters):
  """The notebook with its parameters cell replaced by `parameters` (the rest kept)."""
  nb = nbformat.read(NOTEBOOK, as_version=4)
  cell = _parameters_cell(nb)
  lines = cell.source.splitlines()
  names = [line.split("=")[0].strip() for line in lines]
  assert set(parameters) <= set(names), names
  cell.source = "\n".join(f"{name} = {parameters[name]!r}" if name in parameters else line
                          for name, line in zip(names, lines))
  return nb


def _execute(nb, tmp_path, allow_errors=False):
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                                   allow_errors=allow_errors)
  client.execute(cwd=str(tmp_path), env=run_main_env())  # one CPU device, as in training
  return nb


def _outputs(nb, marker):
  """(text of the stream/result outputs, the outputs) of the one code cell containing `marker`."""
  cell = _code_cell(nb, marker)
  text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
  return text, cell.outputs


def _table_row(text, row):
  """{column: printed value} of the results table row `row` ("SASRec (test)")."""
  lines = text.splitlines()
  header = next(line for line in lines if line.startswith("model"))
  (line,) = [line for line in lines if line.startswith(row)]
  return dict(zip(header.split()[1:], line[len(row):].split()))


def _check_common(nb, path, task_name, results):
  assert "using the installed recjax" in _outputs(nb, "google.colab")[0]
  opened = _outputs(nb, "open_workdir(")[0]
  assert opened.startswith(f"{path}: task ")
  table = _outputs(nb, "results_table(")[0]
  for split in ("valid", "test"):
    cells = _table_row(table, f"{task_name} ({split})")
    assert cells and all(value == f"{results[f'{split}/{column}']:.4f}"
                         for column, value in cells.items()), (split, cells)
  _, plot = _outputs(nb, "plot_metrics(")
  (png,) = [o.data["image/png"] for o in plot if "image/png" in o.get("data", {})]
  assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"


def test_sasrec_workdir(sasrec_workdir, sasrec, tmp_path):  # noqa: F811
  users = sasrec.example_users(2)
  nb = _execute(_notebook(WORKDIR=str(sasrec_workdir), USERS=users), tmp_path)
  results = json.loads((sasrec_workdir / "results.json").read_text())
  _check_common(nb, sasrec_workdir, "SASRec", results)
  recommendations = _outputs(nb, "wd.recommend(")[0]
  assert recommendations.strip() == "\n\n".join(str(r) for r in sasrec.recommend(users))
  for user in users:
    block = recommendations.split(f"user {user} (test)")[1].split("\n\n")[0]
    assert sum(line.startswith(f"{rank:5d}. ") for line in block.splitlines()
               for rank in range(1, 11)) == 10
  assert "is not a language model" in _outputs(nb, "wd.generate(")[0]


def test_lm_workdir(lm_workdir, lm, tmp_path):  # noqa: F811
  nb = _execute(_notebook(WORKDIR=str(lm_workdir)), tmp_path)
  results = json.loads((lm_workdir / "results.json").read_text())
  _check_common(nb, lm_workdir, "LM", results)
  assert "does not rank items" in _outputs(nb, "wd.recommend(")[0]
  text = _outputs(nb, "wd.generate(")[0]
  for split in ("valid", "test"):
    for corpus in ("histories", "items"):
      assert (f"{corpus} ({split}): perplexity {results[f'{split}/{corpus}/ppl']:.3f}"
              in text)
  assert text.count("[histories] ") == 3 and text.count("  generated: ") == 3
  for sample in lm.generate(3, split="test"):
    assert str(sample) in text


def test_an_unreadable_workdir_is_one_error_line(sasrec_workdir, tmp_path):  # noqa: F811
  missing = tmp_path / "missing"
  empty = tmp_path / "no_checkpoints"
  empty.mkdir()
  (empty / "config.json").write_text((sasrec_workdir / "config.json").read_text())
  corrupt = tmp_path / "corrupt"
  corrupt.mkdir()
  (corrupt / "config.json").write_text("{not json")
  # One kernel: the install cell, then the parameters and open cells once per bad workdir.
  nb = _notebook()
  cells = [_code_cell(nb, "google.colab")]
  for path in (missing, empty, corrupt):
    cells += [nbformat.v4.new_code_cell(_parameters_cell(_notebook(WORKDIR=str(path))).source),
              nbformat.v4.new_code_cell(_code_cell(nb, "open_workdir(").source)]
  nb.cells = cells
  _execute(nb, tmp_path, allow_errors=True)
  errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
  assert len(errors) == 3
  expected = [f"{missing}: no such directory", f"no finished checkpoint in {empty}/checkpoints",
              f"{corrupt}/config.json is not valid JSON"]
  for error, message in zip(errors, expected):
    assert error.ename == "WorkdirError" and message in error.evalue
    assert len(error.traceback) == 1 and message in error.traceback[0]
