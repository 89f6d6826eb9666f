"""Command-line conventions shared by the entry points: expected errors and warnings as one line each."""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator

from tqdm import tqdm


def show_warning_one_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.showwarning`` for CLIs: ``warning: <message>`` on stderr, clear of the progress bar."""
    tqdm.write(f"warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def one_line_errors(traceback: bool, errors: tuple[type[BaseException], ...],
                    one_line_warnings: bool = True) -> Iterator[None]:
    """Run a CLI body: an error of a type in ``errors`` prints ``error: <message>`` on stderr and exits 2;
    ``traceback=True`` re-raises it instead. Warnings print as one line unless ``traceback`` is set."""
    if one_line_warnings and not traceback:
        warnings.showwarning = show_warning_one_line
    try:
        yield
    except errors as exc:
        if traceback:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
