"""The commands in README and docs/ still run: every ``egnn`` command written there is checked against the CLI
(its command exists, its flags exist and parse, the config files it names are in the repository), every
``python scripts/...`` names a script that exists and flags it declares, the imports of every Python example
work, and the cheap commands (no training) are run end to end."""
import os
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO, cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`((?:egnn|python scripts/)[^`]*)`(?!`)")


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a bash block: continuation lines joined, comments dropped, ``a && b`` split, and what runs
    ``egnn`` through another program (``torchrun ... --no-python egnn``) cut down to the egnn part."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            part, words = (words[:words.index("&&")], words[words.index("&&") + 1:]) if "&&" in words else (words, [])
            if "egnn" in part and part[0] != "pip":
                part = part[part.index("egnn"):]
            if part and part[0] in ("egnn", "python"):
                out.append(part)
    return out


def collect() -> tuple[list, list, list]:
    """(fenced commands, inline commands, python blocks) as (where, words / text)."""
    fenced, inline, python = [], [], []
    for doc in DOCS:
        text = doc.read_text()
        for lang, body in FENCE.findall(text):
            if lang == "bash":
                fenced += [(doc.name, words) for words in shell_commands(body)]
            elif lang == "python":
                python.append((doc.name, body))
        prose = FENCE.sub("", text)
        inline += [(doc.name, shlex.split(span)) for span in INLINE.findall(prose.replace("\n", " "))
                   if "..." not in span and "…" not in span]
    return fenced, inline, python


FENCED, INLINE_COMMANDS, PYTHON = collect()


def click_command(words: list[str]):
    import typer

    from egnn.cli import app

    group = typer.main.get_command(app)
    name = words[1] if len(words) > 1 else None
    assert name in group.commands, f"no command 'egnn {name}'"
    return group.commands[name]


def check_flags(command, words: list[str], where: str) -> None:
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for w in words[2:]:
        if w.startswith("--"):
            assert w.split("=")[0] in known, f"{where}: egnn {words[1]} has no flag {w}"
        if w.endswith((".yaml", ".yml")) and not w.startswith("runs/"):
            assert (REPO / w).is_file(), f"{where}: {w} is not in the repository"


def check_script(words: list[str], where: str) -> None:
    assert words[1].startswith("scripts/"), f"{where}: {' '.join(words)}"
    script = REPO / words[1]
    assert script.is_file(), f"{where}: {words[1]} does not exist"
    source = script.read_text()
    for w in words[2:]:
        if w.startswith("--"):
            assert f'"{w.split("=")[0]}"' in source, f"{where}: {words[1]} declares no flag {w}"


def test_the_docs_have_commands_to_check():
    """The collection itself works: the front page's two quick-start commands and the manual's are found."""
    found = [" ".join(w) for _, w in FENCED]
    assert "egnn train --way 5 --shot 5 --transductive" in found and "pytest -q" not in found
    assert sum(doc == "manual.md" for doc, _ in FENCED) >= 20 and len(INLINE_COMMANDS) >= 10 and PYTHON


@pytest.mark.parametrize("where,words", FENCED, ids=[" ".join(w)[:60] for _, w in FENCED])
def test_every_command_in_a_block_parses(where, words):
    if words[0] == "python":
        return check_script(words, where)
    command = click_command(words)
    check_flags(command, words, where)
    command.make_context(words[1], list(words[2:]), resilient_parsing=False)  # types, choices, required options


@pytest.mark.parametrize("where,words", INLINE_COMMANDS, ids=[" ".join(w)[:60] for _, w in INLINE_COMMANDS])
def test_every_command_in_the_prose_names_real_flags(where, words):
    if words[0] == "python":
        return check_script(words, where)
    if len(words) > 1 and not words[1].startswith("-"):
        check_flags(click_command(words), words, where)


@pytest.mark.parametrize("where,body", PYTHON, ids=[f"{w}:{i}" for i, (w, _) in enumerate(PYTHON)])
def test_the_imports_of_every_python_example_work(where, body):
    imports = "\n".join(line for line in body.splitlines() if re.match(r"(from \S+ )?import ", line))
    assert imports, f"{where}: an example without imports"
    exec(compile(imports, where, "exec"), {})


CHEAP = [words for _, words in FENCED if words[:2] == ["egnn", "datasets"] or "--list" in words]


@pytest.mark.parametrize("words", CHEAP, ids=[" ".join(w) for w in CHEAP])
def test_the_cheap_commands_run(words, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    proc = cli(*words[1:], env={"EGNN_DATA": os.environ["EGNN_DATA"]})
    assert proc.returncode == 0, proc.stderr
    if words[1] == "datasets":
        assert "omniglot" in proc.stdout and "glyphs" in proc.stdout
    else:  # a sweep's runs, one line each, named as in its spec
        spec = Path(words[2]).read_text()
        names = [line.split()[0] for line in proc.stdout.strip().splitlines()]
        assert names and all(name.rstrip(":") in spec or "=" in name for name in names), proc.stdout
