"""The README stays true: its onnxruntime snippet is the tested example file, its modules and presets exist."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_onnxruntime_snippet_is_the_tested_example() -> None:
    example = (ROOT / "docs" / "onnxruntime_example.py").read_text()
    body = example.split('"""', 2)[2].lstrip("\n")  # the file minus its docstring
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert body in blocks


def test_commands_in_readme_exist() -> None:
    for module in set(re.findall(r"python -m (fastnst\.\w+)", README)):
        assert importlib.util.find_spec(module) is not None, module
    for target in ("demo:", "test:", "test-slow:"):
        assert target in (ROOT / "Makefile").read_text()
    for group, option in re.findall(r"`(model|loss|logger|trainer|optim|callbacks|hydra/launcher)=(\w+)`", README):
        assert (ROOT / "conf" / group / f"{option}.yaml").is_file(), (group, option)
