"""The code blocks of README.md and of the documentation's pages, as tests/test_docs.py runs
them.

A page's blocks are read in order: Python blocks (```` ```python ```` in Markdown,
``.. code-block:: python`` in reST), each with the ``text`` block that follows it directly
(nothing but blank lines between) as what it prints, and shell blocks (``sh``/``console``).
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


@dataclass
class Block:
    language: str
    code: str
    output: str | None = None  # what the page shows it prints


_MARKDOWN = re.compile(r"^```(\w+)\n(.*?)^```\s*$", re.S | re.M)
_REST = re.compile(r"^\.\. code-block:: (\w+)\n((?:[ \t]*:\w[^\n]*\n)*)\n((?:(?:[ \t]+[^\n]*)?\n)+)",
                   re.M)


def _pair(found: list[tuple[str, str, int, int]], text: str) -> list[Block]:
    blocks = []
    for i, (language, code, start, end) in enumerate(found):
        if language == "text":
            continue
        block = Block(language, code)
        if language == "python" and i + 1 < len(found) and found[i + 1][0] == "text" \
                and not text[end:found[i + 1][2]].strip():
            block.output = found[i + 1][1]
        blocks.append(block)
    return blocks


def markdown_blocks(path: Path = README) -> list[Block]:
    text = path.read_text()
    return _pair([(m[1], m[2], m.start(), m.end()) for m in _MARKDOWN.finditer(text)], text)


def rest_blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = [(m[1], textwrap.dedent(m[3]).strip("\n") + "\n", m.start(), m.end())
             for m in _REST.finditer(text)]
    return _pair(found, text)


def doc_pages() -> list[Path]:
    """The hand-written pages (the generated API and example pages hold no blocks)."""
    generated = {DOCS / "examples_list.rst"}
    return sorted(p for p in DOCS.rglob("*.rst")
                  if "_build" not in p.parts and "api" not in p.relative_to(DOCS).parts[:1]
                  and p not in generated)


def run_python(code: str, namespace: dict, where: str) -> str:
    """Execute ``code`` in ``namespace``; what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, where, "exec"), namespace)
    return out.getvalue()


def printed_matches(shown: str, printed: str) -> bool:
    """The page shows the last lines the block prints (fit's per-epoch lines may come before)."""
    shown_lines = [line.rstrip() for line in shown.strip("\n").splitlines()]
    printed_lines = [line.rstrip() for line in printed.strip("\n").splitlines()]
    return printed_lines[-len(shown_lines):] == shown_lines
