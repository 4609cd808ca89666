"""Every command the README shows works as written.

The commands are read from the README itself (its ``bash`` blocks and the inline code
that starts with ``make``, ``quarto``, ``shopbayes`` or ``python -m``), so a command added
to the README is checked without editing this file:

* ``make`` targets run as a dry run (``make -n``) with the variables the README gives;
* ``quarto render`` commands name the project's Python in ``QUARTO_PYTHON``, which has
  what Quarto needs from it (Jupyter, papermill for ``-P``), use formats ``_quarto.yml``
  lists and parameters the documents' ``parameters`` cells define;
* ``shopbayes`` commands (and their synopses, with placeholders filled) parse with the
  real argument parser; ``python -m analysis.<step>`` runs from a folder without a
  config file.

The cheap commands are run for real on a small demo here; the slow test
``test_the_readme_pipeline_commands_run`` runs the rest (the whole pipeline, the second
case and the report).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_COMMAND = re.compile(r"^(?:[A-Z_]+=\S+\s+)*(?:make|quarto|\.venv/bin/shopbayes|shopbayes"
                      r"|python -m)(?:\s|$)")
# placeholders of the synopses and of the examples, and what stands in for them here
_PLACEHOLDERS = {"DIR": "x", "N": "100", "S": "1", "STEP": "clean",
                 "name:value": "results_dir:x"}


def readme_commands() -> list[str]:
    """The README's commands: lines of ``bash`` blocks (comments dropped) and inline code
    that starts like a command, in order, each once."""
    text = README.read_text(encoding="utf-8")
    found: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.splitlines():
            line = re.split(r"\s+#\s", line, maxsplit=1)[0].strip()
            if line:
                found.append(line)
    for code in re.findall(r"`([^`\n]+)`", text):
        code = code.replace("\\|", "|")  # an escaped pipe inside a Markdown table
        if _COMMAND.match(code):
            found.append(code)
    return list(dict.fromkeys(found))


def split(command: str) -> tuple[dict[str, str], list[str]]:
    """``VAR=value ... program args`` as (environment, argv)."""
    words = shlex.split(command)
    env = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    return env, words


def concrete(argv: list[str]) -> list[str]:
    """A synopsis with its optional parts taken and placeholders filled
    (``[--to html|typst]`` -> ``--to html``)."""
    out = []
    for word in argv:
        word = word.strip("[]")
        if "|" in word:
            word = word.split("|")[0]
        out.append(_PLACEHOLDERS.get(word, word))
    return out


COMMANDS = readme_commands()


def test_the_readme_has_the_commands_this_file_checks():
    kinds = {split(c)[1][0] for c in COMMANDS}
    assert kinds <= {"make", "quarto", ".venv/bin/shopbayes", "shopbayes", "python"}, kinds
    for expected in ("make report", "make test", ".venv/bin/shopbayes check-data",
                     "QUARTO_PYTHON=.venv/bin/python quarto render report -P",
                     "python -m analysis.steps.uplift"):
        assert any(c.startswith(expected) for c in COMMANDS), expected


@pytest.mark.parametrize("command", [c for c in COMMANDS if split(c)[1][0] == "make"])
def test_make_commands_exist(command):
    env, argv = split(command)
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    run = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=60)
    assert run.returncode == 0, f"{command}: {run.stderr}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if split(c)[1][0] == "quarto"])
def test_quarto_commands_give_quarto_what_it_needs(command):
    """Quarto runs the chunks with the Python in QUARTO_PYTHON (without it, the system
    Python, which has no Jupyter); ``-P`` needs papermill in that Python."""
    import yaml

    from analysis.render.report import parse_qmd

    env, argv = split(command)
    assert argv[:2] == ["quarto", "render"], command
    python = env.get("QUARTO_PYTHON")
    assert python == ".venv/bin/python", f"{command}: Quarto must be given the project's Python"
    project = ROOT / argv[2]
    assert (project / "_quarto.yml").exists(), command
    formats = yaml.safe_load((project / "_quarto.yml").read_text(encoding="utf-8"))["format"]
    args = argv[3:]
    needs = ["nbformat", "nbclient", "ipykernel", "yaml"]
    while args:
        option, value = args.pop(0), args.pop(0)
        if option == "--to":
            assert value in formats, f"{command}: {value} is not a format of _quarto.yml"
        elif option == "-P":
            needs.append("papermill")
            name = value.split(":", 1)[0]
            for qmd in project.glob("*.qmd"):
                _, parts = parse_qmd(qmd.read_text(encoding="utf-8"))
                params = [p.code for p in parts if not isinstance(p, str)
                          and "parameters" in (p.options.get("tags") or [])]
                assert params and re.search(rf"^{name}\s*=", params[0], re.M), (
                    f"{command}: {qmd.name} has no parameter {name}")
        else:
            pytest.fail(f"{command}: option {option} is not checked here")
    # the Python the command names (make install made it) has what Quarto needs of it
    interpreter = ROOT / python
    assert interpreter.exists(), f"{command}: {python} not found (run make install)"
    code = "; ".join(f"import {m}" for m in needs)
    run = subprocess.run([str(interpreter), "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, f"{command}: {run.stderr}"


SHOPBAYES = [c for c in COMMANDS if split(c)[1][0] in ("shopbayes", ".venv/bin/shopbayes")]


@pytest.mark.parametrize("command", SHOPBAYES)
def test_shopbayes_commands_parse(command):
    argv = concrete(split(command)[1][1:])
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{command} (as {argv}): the parser refused it ({exc})")


@pytest.mark.parametrize("command", [c for c in COMMANDS if split(c)[1][0] == "python"])
def test_step_modules_run_as_the_readme_says(command, tmp_path):
    """``python -m analysis.<step>`` is ``shopbayes run <step>`` and needs no
    shopbayes.toml (run from an empty folder); the steps themselves run in the slow test
    below and in tests/analysis."""
    module = split(command)[1][2]
    assert module.startswith("analysis."), command
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: shopbayes run"), out.stdout[:200]


def _with_paths(command: str, data: Path, one_click: Path, results: Path) -> list[str]:
    """A README example with its paths pointed at test folders."""
    argv = concrete(split(command)[1][1:])
    # the database example reads the test folder's own SQLite file through Ibis
    subs = {"/path/to/folder": str(data), "../shared/data/one_click": str(one_click),
            "URL": f"sqlite:///{(data / 'shop_database.db').resolve()}"}
    argv = [subs.get(a, a) for a in argv]
    if argv[0] == "run" and "--data" not in argv:  # `shopbayes run` on the configured data
        argv += ["--data", str(one_click if "one-click" in argv else data)]
    if argv[0] in ("run", "report") and "--results" not in argv:
        argv += ["--results", str(results)]
    if argv[0] == "report":
        argv += ["--to", "html"]
    return argv


@pytest.mark.parametrize("command", [c for c in SHOPBAYES if re.search(
    r"shopbayes (check-data|steps|demo-data)(?!.*\[)", c)])
def test_the_cheap_shopbayes_commands_run(command, small_demo, tmp_path, monkeypatch):
    argv = _with_paths(command, small_demo, small_demo, tmp_path / "results")
    if argv[0] == "check-data" and len(argv) > 1 and argv[1].startswith("../shared"):
        if not (ROOT / argv[1]).exists():
            pytest.skip(f"{argv[1]} absent (real data not here)")
        argv[1] = str(ROOT / argv[1])
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 0, command


@pytest.mark.slow
def test_the_readme_pipeline_commands_run(small_demo, one_click_demo, tmp_path,
                                          monkeypatch):
    """The examples that run steps and render the report, on small data."""
    shutil.copytree(ROOT / "report", tmp_path / "report",
                    ignore=shutil.ignore_patterns("_site"))
    monkeypatch.chdir(tmp_path)
    examples = [c for c in SHOPBAYES if re.search(r"shopbayes (run|report)(?!.*\[)", c)]
    assert examples
    for command in examples:
        argv = _with_paths(command, small_demo, one_click_demo, tmp_path / "results")
        assert main(argv) == 0, command
