"""Every ```python block of every docs/*.md page runs.

A page's blocks run in order in one fresh namespace (a later block may use an earlier
one's names), with ``torch.manual_seed(0)``, one thread, and a temporary working
directory, so pages that write files leave nothing behind. Shell, YAML and text blocks
are not Python and are not run. A Python block whose first line is ``# not run: <reason>``
is skipped: the escape for what cannot run here (a GPU, torchrun), never for a slow or
broken example.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^\s*```(\w*)\s*$")
NOT_RUN = "# not run:"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """The ```python blocks of a Markdown page: (first line number, source), in order."""
    blocks: list[tuple[int, str]] = []
    lang: str | None = None
    body: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if lang is None and match:
            lang, body, start = match[1], [], number + 1
        elif lang is not None and match and not match[1]:
            if lang == "python":
                blocks.append((start, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    if lang is not None:
        raise ValueError(f"a ``` fence opened at line {start - 1} is never closed")
    return blocks


def test_python_blocks_parses_fences() -> None:
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == [(3, "x = 1"), (9, "y = x")]
    with pytest.raises(ValueError, match="never closed"):
        python_blocks("```python\nx = 1\n")


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_page_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(page.read_text())
    if not blocks:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for line, source in blocks:
        if source.lstrip().startswith(NOT_RUN):
            continue
        code = compile("\n" * (line - 1) + source, str(page), "exec")
        exec(code, namespace)
