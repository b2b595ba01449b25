"""An indentation-aware line emitter for generated C++ and Makefiles.

Why not templates: generated text comes from code that walks a structure, so every
line has one origin and no escaping rules (``{{``/``}}``) leak into the source.
"""

from __future__ import annotations

from contextlib import contextmanager


class CodeWriter:
    def __init__(self, indent: str = "  ") -> None:
        self._lines: list[str] = []
        self._depth = 0
        self._indent = indent

    def line(self, text: str = "") -> None:
        self._lines.append(f"{self._indent * self._depth}{text}" if text else "")

    def lines(self, texts) -> None:
        for text in texts:
            self.line(text)

    @contextmanager
    def indented(self):
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def open(self, opening_line: str) -> None:
        """Write ``opening_line`` (ending in ``{``) and indent; pair with :meth:`close`.
        For blocks opened conditionally, where a ``with`` would not fit."""
        self.line(opening_line)
        self._depth += 1

    def close(self, tail: str = "}") -> None:
        self._depth -= 1
        self.line(tail)

    @contextmanager
    def block(self, head: str, tail: str = "}"):
        """``head {`` ... ``}`` with the body indented."""
        self.line(f"{head} {{")
        with self.indented():
            yield
        self.line(tail)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
