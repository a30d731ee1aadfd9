"""Every command the README and the docs/ pages show is a command graphcalc takes (issue 28: the docs cannot drift
from the code), and every one on a bundled sample runs here as a user would type it.

Each `graphcalc ...` line of a fenced block is parsed by the command line itself (unknown
options and bad choices fail); those on `samples/` models run for real (outputs to a temporary
folder), except the ones that need what this machine lacks (a hub download, a real GPU
snapshot, a 7B replay or many ranks: listed in SKIP with why), and must end as the README says:
exit 0, or exit 1 where the README says a check may fail. Never an internal error.
"""

from __future__ import annotations

import re
import shlex

import pytest
import typer
from typer.testing import CliRunner

from graphcalc_cli.app import app

from conftest import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
OUTPUT_FLAGS = {"-o", "--output", "--svg", "--timeline-svg", "--snapshot", "--plot"}
SKIP = {  # a substring of the command -> why it does not run here
    "hf:": "reads a config from the Hugging Face hub",
    "build_7b": "a 7B replay takes minutes",
    "samples/llama.py --batch 8 --optim adamw --amp bf16 --world-size": "a 7B-class replay",
    "samples/llama.py --memory 80GiB": "a 7B-class fit",
    "compare": "needs a real GPU memory snapshot",
    "--world-size 2": "real ranks: tests/test_distributed.py runs them",
    "--verify": "a real step at the batch found: tests/test_verify.py runs fit --verify",
}


def commands() -> list[str]:
    lines = []
    for page in [README, *DOCS]:
        fenced = False
        for line in page.read_text().splitlines():
            if line.startswith("```"):
                fenced = not fenced
            elif fenced and line.startswith("graphcalc "):
                lines.append(line)
    return lines


def argv(line: str) -> list[str]:
    """The arguments, without the comment and the `[--batch N]` placeholders."""
    line = re.sub(r"\[[^\]]*\]", "", line)
    return shlex.split(line, comments=True)[1:]


def test_the_readme_shows_commands():
    assert len(commands()) >= 30


def test_every_link_of_the_readme_and_docs_leads_to_a_file():
    import re as re_

    for page in [README, *DOCS]:
        for target in re_.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).exists(), f"{page.name}: {target}"


@pytest.mark.parametrize("line", commands())
def test_every_readme_command_parses(line):
    args = argv(line)
    group = typer.main.get_command(app)
    if args == ["--version"]:
        return
    with group.make_context("graphcalc", list(args), resilient_parsing=False) as ctx:
        name = args[0]
        command = group.get_command(ctx, name)
        assert command is not None, f"no command {name!r}: {line}"
        command.make_context(name, list(args[1:]), parent=ctx)  # raises on a bad option


def _runnable(line: str) -> bool:
    args = argv(line)
    return (len(args) > 1 and args[1].startswith("samples/")
            and not any(key in line for key in SKIP))


@pytest.mark.slow
@pytest.mark.parametrize("line", [c for c in commands() if _runnable(c)])
def test_every_readme_command_on_a_sample_runs(line, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("GRAPHCALC_RENDER_ENGINE", "embedded")
    args = argv(line)
    for i, a in enumerate(args[:-1]):
        if a in OUTPUT_FLAGS:  # outputs go to the temporary folder, never into the checkout
            args[i + 1] = str(tmp_path / args[i + 1].split("/")[-1])
    result = CliRunner().invoke(app, args)
    allowed = {0, 1} if args[0] in ("verify", "fit", "check") else {0}
    assert result.exit_code in allowed, f"{line}\n{result.output[-2000:]}"
    assert "internal error" not in result.output and "Traceback" not in result.output
