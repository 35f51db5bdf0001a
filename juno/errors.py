"""One exception family: every error a user can cause is a JunoError and exits with code 2."""

from __future__ import annotations

from collections.abc import Sequence


class JunoError(Exception):
    """A problem with the user's input or configuration (exit code 2)."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        expected: str | None = None,
        examples: Sequence[str] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.column = column
        self.expected = expected
        self.examples = list(examples)[:5]
        self.hint = hint

    def render(self) -> str:
        """The message as a store manager reads it: what, where, what was expected, examples."""
        lines = [self.message]
        if self.file:
            lines.append(f"  file:     {self.file}")
        if self.column:
            lines.append(f"  column:   {self.column}")
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        if self.examples:
            lines.append("  examples:")
            lines.extend(f"    {e}" for e in self.examples)
        if self.hint:
            lines.append(f"  hint:     {self.hint}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


class InputError(JunoError):
    """An input file cannot be used as it is."""


class ConfigError(JunoError):
    """The configuration file is invalid."""


class OutputError(JunoError):
    """The output folder cannot be written."""
