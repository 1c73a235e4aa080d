"""The Python examples in docs/text.md run as written."""
import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "text.md"


def test_docs_text_examples_run():
  blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
  assert len(blocks) >= 5
  namespace = {}
  for block in blocks:
    exec(compile(block, str(DOC), "exec"), namespace)  # pylint: disable=exec-used
