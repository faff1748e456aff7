"""Every Python block of README.md runs as written (the tour must stay true)."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(code, capsys):
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    capsys.readouterr()


def test_readme_has_the_two_fresh_machine_commands():
    assert "jaxbayes demo" in README
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    command = re.search(r"# --- README test command.*?\n(.*?)\n# --- end ---", ci, flags=re.S).group(1)
    assert command.strip() in README, "the test command in .ci/run must be exactly README's"
