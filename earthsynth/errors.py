"""One exception family for every user-facing mistake.

Each error names the file (or argument) at fault and says what to do about it; the CLI prints the message
and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

from pathlib import Path


class EarthsynthError(Exception):
    """Base class: a bad input or environment the user can fix."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.path = Path(path) if path is not None else None
        self.hint = hint
        parts = [f"{self.path}: {message}" if self.path is not None else message]
        if hint:
            parts.append(f"What to do: {hint}")
        super().__init__("\n".join(parts))


class InputFileError(EarthsynthError):
    """A file is missing, unreadable, corrupt or truncated."""


class RPCFormatError(EarthsynthError):
    """An RPC file (or tag set) is in an unknown format or is incomplete."""


class MissingRPCError(EarthsynthError):
    """An image has no RPC, neither in its tags nor in a sidecar file."""


class SceneError(EarthsynthError):
    """A scene folder is inconsistent (bad scene.json, NaN pixels, mixed GSDs...)."""


class OutputError(EarthsynthError):
    """An output folder or file cannot be written."""


class ConfigError(EarthsynthError):
    """A configuration value is out of range or inconsistent."""
