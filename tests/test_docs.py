"""The README and the manual (docs/) stay true: the site builds with --strict (no broken link or anchor), every
command in a code block parses with the command's own parser (training overrides compose with Hydra), every
flag named in the prose exists, every config option named exists, Python blocks compile, and the
onnxruntime snippet is the tested example file."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

from fastnst.commands import SUBCOMMANDS
from fastnst.training.hydra_checks import _composition_problem, register_trainer_schema

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# How a command is spelt in the docs -> the `fastnst` subcommand it is.
SPELLINGS = {"python train.py": "train", "python infer.py": "stylize",
             **{f"python -m fastnst.{name}": name for name in ("export", "evaluate", "optimize", "bench", "prepare", "info", "web")},
             **{f"fastnst-{name}": name for name in ("export", "evaluate", "optimize", "bench", "prepare", "info")},
             **{f"fastnst {name}": name for name in SUBCOMMANDS}}
COMMAND = re.compile(r"^(?:srun |/usr/bin/time -v |\S*python\S* -m fastnst )?(" + "|".join(
    re.escape(s) for s in sorted(SPELLINGS, key=len, reverse=True)) + r")(?=\s|$)(.*)$")


def code_blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def commands(page: Path) -> list[tuple[str, list[str]]]:
    """(subcommand, argv) of every command line in the page's bash blocks (continued lines joined)."""
    found = []
    for block in code_blocks(page.read_text(), "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            line = re.sub(r"^(\w+=\S+ )+", "", line)  # environment assignments before the command
            m = COMMAND.match(line)
            if m:
                found.append((SPELLINGS[m.group(1)], shlex.split(m.group(2), comments=True)))
    return found


def parser_of(name: str) -> argparse.ArgumentParser:
    return importlib.import_module(SUBCOMMANDS[name].module).build_parser()


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "site" / "train" / "index.html").is_file()
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(p.name in nav for p in PAGES if p.parent.name == "docs"), "every page is in the nav"


def test_readme_is_short_and_its_links_resolve() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for target in re.findall(r"\]\(((?:docs/)[^)#\s]*)(?:#([^)\s]*))?\)", text):
        path, anchor = target
        assert (ROOT / path).exists(), path
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (ROOT / path).read_text(), re.M)
            assert anchor in {slugify(h, "-") for h in headings}, f"{path}#{anchor}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_line_parses(page: Path) -> None:
    register_trainer_schema()
    for name, argv in commands(page):
        if name == "train":
            overrides = [a for a in argv if a != "..."]
            problem = _composition_problem(overrides, ROOT / "conf")
            assert problem is None, f"{page.name}: fastnst train {shlex.join(argv)}: {problem}"
            if "-m" in argv or "--multirun" in argv:
                assert argv[0] in ("-m", "--multirun"), f"{page.name}: -m goes before the overrides: {argv}"
        else:
            try:
                parser_of(name).parse_args(argv)
            except SystemExit:
                pytest.fail(f"{page.name}: fastnst {name} {shlex.join(argv)} does not parse")


def test_every_flag_named_in_the_prose_exists() -> None:
    """Inline code such as `fastnst stylize --tile 512` names options of that command."""
    for page in PAGES:
        for span in re.findall(r"`([^`\n]+)`", page.read_text()):
            m = COMMAND.match(span.strip())
            if not m or SPELLINGS[m.group(1)] == "train":
                continue
            parser = parser_of(SPELLINGS[m.group(1)])
            known = {s for a in parser._actions for s in a.option_strings}
            for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", m.group(2)):
                assert flag in known, f"{page.name}: `{span}` names {flag}, not an option of that command"


def test_config_options_named_in_the_docs_exist() -> None:
    for page in PAGES:
        text = page.read_text()
        for group, option in re.findall(r"`(model|loss|logger|trainer|optim|callbacks|data|hydra/launcher)=(\w+)`", text):
            assert (ROOT / "conf" / group / f"{option}.yaml").is_file(), (page.name, group, option)


def test_python_blocks_compile() -> None:
    for page in PAGES:
        for block in code_blocks(page.read_text(), "python"):
            compile(block, str(page), "exec")


def test_onnxruntime_snippet_is_the_tested_example() -> None:
    example = (ROOT / "docs" / "onnxruntime_example.py").read_text()
    body = example.split('"""', 2)[2].lstrip("\n")  # the file minus its docstring
    assert body in code_blocks((ROOT / "docs" / "export.md").read_text(), "python")


def test_any_painting_snippet_is_the_tested_example() -> None:
    example = (ROOT / "docs" / "any_painting_onnxruntime.py").read_text()
    body = example.split('"""', 2)[2].lstrip("\n")  # the file minus its docstring
    assert body in code_blocks((ROOT / "docs" / "any-painting.md").read_text(), "python")


def test_modules_named_in_the_docs_exist() -> None:
    for page in PAGES:
        for module in set(re.findall(r"python -m (fastnst(?:\.\w+)*)", page.read_text())):
            assert importlib.util.find_spec(module) is not None, (page.name, module)
    for target in ("demo:", "test:", "test-slow:"):
        assert target in (ROOT / "Makefile").read_text()
