"""The one exception type users see.

Everything that is wrong with a user's input (a missing folder, a corrupt image, a mask with
unknown label ids, a checkpoint of the wrong kind) raises :class:`InputError` with a one-line
message that names the offending file. The CLI turns it into that line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input. ``str(err)`` is a single line naming the file at fault."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        text = f"{self.path}: {message}" if self.path is not None else message
        super().__init__(" ".join(text.split()))  # always one line
