"""The one exception type of factgpt.

Library modules do not print or exit on bad input: they raise FactgptError with a message that
names the file, the line and the problem, and cli.py turns it into one line on stderr and a
non-zero exit. (The one exit in the library is runtime.leave_distributed, which ends a torchrun
process after its process group is torn down.)
"""

from __future__ import annotations

from pathlib import Path


class FactgptError(Exception):
    """A problem the user can fix: bad input, a wrong checkpoint, a missing file."""

    def __init__(self, problem: str, *, path: str | Path | None = None, line: int | None = None,
                 hint: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        message = where + problem
        if hint:
            message += f" ({hint})"
        super().__init__(message)
        self.path = path
        self.line = line


class Interrupted(Exception):
    """Training stopped at a step boundary on the user's Ctrl-C, its resume point written there."""

    def __init__(self, step: int, resume_path: Path) -> None:
        super().__init__(f"interrupted at step {step}; resume point {resume_path}")
        self.step = step
        self.resume_path = resume_path
