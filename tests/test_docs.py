"""The README's commands and the CI script agree; the docs name the real files."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", text, flags=re.S)
    return [line.strip() for line in blocks[0].splitlines() if line.strip()]


def test_readme_opens_with_exactly_two_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert "lincae encode" in commands[0] and "examples/" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in [line.strip() for line in ci]


def test_readme_example_files_exist():
    for name in re.findall(r"examples/[\w.-]+", _readme_commands()[0]):
        assert (ROOT / name).exists(), name


def test_readme_quick_start_runs_twice(cli, tmp_path, monkeypatch):
    """Its outputs are git-ignored, and a second run overwrites them instead of failing.
    (The tiny test model stands in for the default one.)"""
    assert "out/" in (ROOT / ".gitignore").read_text().splitlines()
    parts = [shlex.split(part) for part in _readme_commands()[0].split("&&")]
    steps = [words[1:] for words in parts if words[0] == "lincae"]
    assert len(steps) == 3 and "out/" in steps[0]
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        for step in steps:
            result = cli(*step, model=True)
            assert result.exit_code == 0, (step, result.stderr)
    assert {path.name for path in (tmp_path / "out").iterdir()} >= {"vocals.wav", "song.wav"}
