"""Typed user-facing errors: what was expected, what was got, how to fix it, and the CLI exit code."""

from __future__ import annotations

import os


class LivestemsError(Exception):
    """Base of every error livestems raises on purpose.

    Fields (all optional except ``problem``): ``problem`` (one line, what went wrong),
    ``expected``, ``got``, ``fix`` (a command or step that resolves it), ``path`` (the file
    involved). ``str(err)`` joins them into one message; the CLI prints it and exits with
    ``err.exit_code``. The original exception, when there is one, is chained as ``__cause__``.
    """

    exit_code = 1

    def __init__(
        self,
        problem: str,
        *,
        expected: str | None = None,
        got: str | None = None,
        fix: str | None = None,
        path: str | os.PathLike | None = None,
    ) -> None:
        self.problem = problem
        self.expected = expected
        self.got = got
        self.fix = fix
        self.path = None if path is None else os.fspath(path)
        # Exception.args holds only the problem so that pickling (multiprocessing, pytest-xdist)
        # rebuilds the object through __init__ and then restores the other fields from __dict__.
        super().__init__(problem)

    def __str__(self) -> str:
        head = f"{self.path}: {self.problem}" if self.path else self.problem
        parts = [head]
        if self.expected is not None:
            parts.append(f"expected {self.expected}")
        if self.got is not None:
            parts.append(f"got {self.got}")
        message = "; ".join(parts)
        if self.fix:
            message += f". Fix: {self.fix}"
        return message


class AudioFileError(LivestemsError):
    """An input audio file cannot be used: missing, not audio, empty, corrupt, truncated,
    or at a sample rate outside the supported range."""

    exit_code = 2


class OutputError(LivestemsError):
    """An output cannot be written: it already exists (and overwriting was not asked for),
    its folder is missing or not writable, the disk is full, or the encoder failed."""

    exit_code = 3


class ToolMissingError(LivestemsError):
    """An external program (ffmpeg, ffprobe) that a requested feature needs is not installed."""

    exit_code = 4

    def __init__(self, tool: str, *, needed_for: str, fix: str | None = None) -> None:
        self.tool = tool
        self.needed_for = needed_for
        super().__init__(
            f"'{tool}' is needed for {needed_for} but was not found on PATH",
            expected=f"an executable named '{tool}' on PATH",
            got="none",
            fix=fix or f"install it (Debian/Ubuntu: apt-get install ffmpeg), or avoid {needed_for}",
        )

    def __reduce__(self):
        # __init__ takes different arguments from the base class, so spell out how to rebuild.
        return (_rebuild_tool_missing, (self.tool, self.needed_for, self.fix))


def _rebuild_tool_missing(tool: str, needed_for: str, fix: str | None) -> ToolMissingError:
    return ToolMissingError(tool, needed_for=needed_for, fix=fix)
