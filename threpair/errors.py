"""Typed errors. Library code raises these with an actionable message; only cli.py exits."""

from __future__ import annotations


class ThrepairError(Exception):
    """Base class: the message is shown to the user as one line, so make it say what to do."""


class InputError(ThrepairError):
    """A path or option given by the user is unusable (missing file, same in/out path, ...)."""


class VideoError(ThrepairError):
    """ffmpeg could not read or write a video (not a video, truncated, no video stream, ...)."""


class DetectorError(ThrepairError):
    """A face detector backend could not be set up (e.g. weights missing, offline)."""


class CheckpointError(ThrepairError):
    """A model checkpoint is missing, corrupt, foreign, or of an unsupported format version."""
