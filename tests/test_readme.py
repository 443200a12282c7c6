"""Every Python snippet in the README runs as written when saved to a file."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
TEXT = open(README, encoding="utf-8").read()
SNIPPETS = re.findall(r"```python\n(.*?)```", TEXT, re.DOTALL)
# shell snippets that use the CLI (the set-up commands are what CI itself runs)
SHELL = [s for s in re.findall(r"```bash\n(.*?)```", TEXT, re.DOTALL) if s.startswith("nemorun")]


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_python_snippet_runs_as_written(index, tmp_path):
    script = tmp_path / f"snippet{index}.py"
    script.write_text(SNIPPETS[index])
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, (
        f"snippet {index}:\n{SNIPPETS[index]}\n{proc.stdout}\n{proc.stderr}"
    )


@pytest.mark.parametrize("index", range(len(SHELL)))
def test_shell_snippet_runs_as_written(index, tmp_path):
    script = tmp_path / f"snippet{index}.sh"
    script.write_text("set -e\n" + SHELL[index])
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    proc = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PATH": path},
    )
    assert proc.returncode == 0, f"snippet {index}:\n{SHELL[index]}\n{proc.stdout}\n{proc.stderr}"
