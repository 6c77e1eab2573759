"""The code in an LLM reply to a code task: which fenced block is the solution, and the
program it stands for.

`extract_code` is what a text backend's answer to a ``kind="code"`` task is; the env then
runs it against the task's tests (`deliberation_env.tasks.verify`). Nothing here executes
the code; it is only parsed.
"""

from __future__ import annotations

import re
import textwrap

from deliberation_env.tasks.programs import completed_program, defines_function, parses

__all__ = ["PYTHON_LABELS", "extract_code", "extract_code_span"]

PYTHON_LABELS = ("python", "py", "python3", "py3")
"""Fence labels read as Python; unlabelled blocks are used only when no block has one."""

Span = tuple[int, int]

# An opening fence (``` or ~~~ starting a line, optional label), the body, and the closing
# fence ending a line (models sometimes close on the last code line), or the end of the
# text (a reply cut off by the token limit).
_FENCE_RE = re.compile(
    r"^[ \t]*(?P<fence>```|~~~)[ \t]*(?P<label>[A-Za-z0-9_+.-]*)[^\n]*\n"
    r"(?P<body>.*?)(?:(?P=fence)[ \t]*$|\Z)",
    re.DOTALL | re.MULTILINE,
)
_TOP_LEVEL_DEF_RE = re.compile(r"^(?:async[ \t]+)?def[ \t]+\w+|^class[ \t]+\w+", re.MULTILINE)


def _blocks(text: str) -> list[tuple[str, Span]]:
    """Fenced blocks, Python-labelled ones if any, else all; each with its body's span."""
    found = [m for m in _FENCE_RE.finditer(text) if m.group("body").strip()]
    python = [m for m in found if m.group("label").lower() in PYTHON_LABELS]
    return [(m.group("body"), m.span("body")) for m in (python or found)]


def _code(body: str) -> str:
    # Dedented: a block nested under a list item is indented as a whole.
    return textwrap.dedent(body).strip()


def _stripped(body: str, span: Span) -> tuple[str, Span]:
    start = span[0] + (len(body) - len(body.lstrip()))
    end = span[1] - (len(body) - len(body.rstrip()))
    return _code(body), (start, end)


def extract_code_span(text: str | None, entry_point: str | None = None) -> tuple[str, Span] | None:
    """The solution's code in `text` and where it is, or None when there is none.

    Among the fenced blocks (```python first, else any fence): the last one that defines
    `entry_point`; without `entry_point`, the last one that defines any top-level function
    or class (a usage example after the solution is not the solution); failing that, the
    last block. A reply without fences counts as code only when it parses as Python and
    defines `entry_point` (or, without one, some function).
    """
    if not text or not text.strip():
        return None
    blocks = _blocks(text)
    if not blocks:
        blocks = [(text, (0, len(text)))]
        if not parses(_code(text)):
            return None
        if entry_point is not None and not defines_function(_code(text), entry_point):
            return None
        if entry_point is None and not _TOP_LEVEL_DEF_RE.search(text):
            return None
    if entry_point is not None:
        defining = [b for b in blocks if defines_function(_code(b[0]), entry_point)]
    else:
        defining = [b for b in blocks if _TOP_LEVEL_DEF_RE.search(b[0])]
    return _stripped(*(defining or blocks)[-1])


def extract_code(
    text: str | None, prompt: str | None = None, entry_point: str | None = None
) -> str | None:
    """The code of a reply (see `extract_code_span`), or None when it has none.

    With `prompt` and `entry_point` the result is the runnable program: a block that
    defines the entry point after the prompt (for its imports and helpers), or a
    completion-only body appended to the prompt
    (`deliberation_env.tasks.programs.complete_program`). A reply without fences is then
    also accepted as a completion of the prompt.
    """
    found = extract_code_span(text, entry_point)
    if prompt is None or entry_point is None:
        return None if found is None else found[0]
    if found is None:
        return completed_program(prompt, text, entry_point) if text and text.strip() else None
    return completed_program(prompt, found[0], entry_point) or found[0]
