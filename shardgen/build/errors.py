"""The two ways a build is refused (the CLI's exit statuses 2 and 1)."""

from __future__ import annotations


class BuildError(RuntimeError):
    """The build was refused or failed; the message says why and what to do."""


class StrictError(BuildError):
    """``--strict`` and at least one clip would be skipped, or a finding made (the CLI exits 1)."""
