"""HumanEval-style programs: does some code define the entry point, and the runnable program
a candidate answer stands for (a whole function, or only the body that completes the prompt).

Nothing here runs the code: it is only parsed (`ast`), never executed. Running it is
`deliberation_env.tasks.sandbox`'s job.
"""

from __future__ import annotations

import ast
import textwrap

__all__ = [
    "MAX_PROGRAM_CHARS",
    "complete_program",
    "completed_program",
    "defines_function",
    "parses",
]

MAX_PROGRAM_CHARS = 200_000
"""Longer code is not parsed here (the parser's time and memory grow with it); it goes to
the sandbox as written, where the limits apply."""


def _tree(code: str) -> ast.Module | None:
    if len(code) > MAX_PROGRAM_CHARS:
        return None
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # ValueError: null bytes; RecursionError/MemoryError: pathological nesting.
        return None


def parses(code: str) -> bool:
    """Whether `code` is valid Python (and short enough to check here)."""
    return _tree(code) is not None


def defines_function(code: str, name: str) -> bool:
    """Whether `code` parses and defines a top-level function (or class) called `name`."""
    tree = _tree(code)
    if tree is None:
        return False
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return any(isinstance(node, kinds) and node.name == name for node in tree.body)


def _implements(program: str, name: str) -> bool:
    """Whether `program` compiles and its last top-level `name` has a body beyond a
    docstring (the prompt's stub alone does not count)."""
    tree = _tree(program)
    if tree is None:
        return False
    try:
        # Compiling the tree runs the symbol-table checks ast.parse skips ("'return'
        # outside function"); it executes nothing.
        compile(tree, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    found = [node for node in tree.body if isinstance(node, kinds) and node.name == name]
    if not found:
        return False
    body = found[-1].body
    has_docstring = (
        isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    )
    return len(body) > int(has_docstring)


def complete_program(prompt: str, code: str, entry_point: str) -> str:
    """The program `code` stands for, given the task's `prompt` (its imports, helpers and
    the entry point's signature and docstring): `completed_program`, or when that finds
    none, the prompt plus `code` as written, for the sandbox to report what is wrong."""
    program = completed_program(prompt, code, entry_point)
    if program is not None:
        return program
    head = prompt if prompt.endswith("\n") else f"{prompt}\n"
    body = code.strip("\n")
    return f"{head}{body}\n"


def completed_program(prompt: str, code: str, entry_point: str) -> str | None:
    """The runnable program for `code`, or None when it neither defines `entry_point` nor
    compiles as a completion of `prompt`.

    - `code` defines `entry_point`: the prompt, then `code`. The prompt comes first for
      its imports and helper functions (HumanEval/38's ``encode_cyclic``); the
      candidate's definition replaces the prompt's stub.
    - otherwise `code` is a completion, the body HumanEval's own harness appends to the
      prompt. Its first line may have lost its indentation (answers are stripped), so
      the prompt plus the body as written, with the first line re-indented, and fully
      re-indented are tried in that order; the first that compiles and gives the entry
      point a body wins.
    """
    if defines_function(code, entry_point):
        program = f"{prompt.rstrip()}\n\n{code}\n"
        return program if parses(program) else f"{code}\n"
    head = prompt if prompt.endswith("\n") else f"{prompt}\n"
    body = code.strip("\n")
    for variant in (
        body,
        f"    {body}",
        textwrap.indent(textwrap.dedent(body), "    "),
    ):
        program = f"{head}{variant}\n"
        if _implements(program, entry_point):
            return program
    return None
