"""Errors a user can cause and fix, and how every command reports them: one line, no traceback."""

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

EXIT_FAILED = 1  # a photo, the weights or another input could not be used
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader (e.g. `| head`) stopped reading
# File descriptor 2 is the whole process's: while a decoding thread has it pointed into a file to catch what
# libjpeg prints (common.image.c_stderr_captured), a line another thread writes to stderr would land there too.
# So every line of ours goes through say(), which waits for the capture to end.
STDERR_LOCK = threading.Lock()


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


def say(line: str, file=None) -> None:
    """Print one line to stderr (or file), flushed at once, never into a capture of the decoder's messages."""
    with STDERR_LOCK:
        print(line, file=file or sys.stderr, flush=True)


def run_reporting_errors(body: Callable[[], int], interrupted: str = "interrupted") -> int:
    """Run a command's body and return its exit code; what a user causes becomes one line on stderr."""
    try:
        return body()
    except UserError as e:
        say(f"error: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        say(f"error: {interrupted}")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Nobody reads our output any more; point stdout at /dev/null so that Python's own flush at exit
        # does not fail again with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
