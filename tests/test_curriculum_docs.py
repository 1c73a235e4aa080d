"""The Python examples in docs/curriculum.md run as written."""
import pathlib
import re

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "curriculum.md"


def test_docs_curriculum_examples_run():
  blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
  assert len(blocks) == 4
  namespace = {}
  for block in blocks:
    exec(compile(block, str(DOC), "exec"), namespace)  # pylint: disable=exec-used
