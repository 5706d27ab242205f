"""Errors a user can cause and fix. The command line prints them as one line, without a traceback."""

from pathlib import Path


class UserError(Exception):
    """Something the user can fix; the message says what happened and what to do."""


class WeightsError(UserError):
    pass


class ImageError(UserError):
    """A photo (or folder of photos) that cannot be classified. `path` names it, so that --json can
    report the error under the image it belongs to."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
