"""The README stays a short user guide, the guide under docs/ builds offline, and every command they show is real."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]*\bsftflow [^`\n]*)`")


def snippets(text: str) -> list[str]:
    """The commands a page shows: lines of its code blocks, and inline code, that call sftflow."""
    block_lines = [line.removeprefix("$ ") for block in FENCE.findall(text) for line in block.splitlines()]
    found = [line for line in block_lines if line.startswith("sftflow ")]
    return found + INLINE.findall(FENCE.sub("", text))


def test_the_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_guide_builds_offline(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "index.html").exists() and (tmp_path / "scoring" / "index.html").exists()


def options(parser: argparse.ArgumentParser) -> tuple[set[str], dict[str, argparse.ArgumentParser]]:
    flags = {flag for action in parser._actions for flag in action.option_strings}
    verbs = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            verbs.update(action.choices)
    return flags, verbs


def test_every_command_and_flag_the_guide_shows_exists():
    from flows.cli import build_parser

    _, commands = options(build_parser())
    checked = 0
    for page in PAGES:
        for text in snippets(page.read_text()):
            for snippet in text.split("sftflow ")[1:]:
                words = [w for w in snippet.split() if w not in ("-v", "--verbose", "-h", "--help")]
                if not words or words[0].isupper():  # `sftflow --help`, `sftflow COMMAND --help`
                    continue
                assert words and words[0] in commands, f"{page.name}: `sftflow {snippet}` is no command"
                flags, verbs = options(commands[words[0]])
                if len(words) > 1 and words[1] in verbs:
                    sub_flags, _ = options(verbs[words[1]])
                    flags = flags | sub_flags
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", snippet):
                    assert flag in flags, f"{page.name}: `sftflow {snippet}`: {words[0]} has no {flag}"
                checked += 1
    assert checked > 50
