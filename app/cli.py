"""Command-line conventions shared by the entry points: expected errors and warnings as one line each."""
from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from hydra.experimental.callback import Callback
from hydra.utils import get_method
from omegaconf import DictConfig
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


class CheckConfig(Callback):
    """Hydra callback (``hydra.callbacks`` in a conf/*.yaml): ``check(cfg)`` before Hydra makes the run folder, so a
    bad value is one line and exit 2 (:func:`one_line_errors`) with nothing written.

    ``check`` is the dotted path of a function taking the composed config (``hydra.runtime`` not yet filled in)
    that the task function also calls: with ``traceback=true`` (Hydra turns a callback's exception into a warning)
    and in multirun jobs, that call reports the error, from inside the job's folder."""

    def __init__(self, check: str) -> None:
        self.check: Callable[[DictConfig], None] = get_method(check)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("traceback"):
            return
        with one_line_errors(False, (ValueError,), one_line_warnings=False):
            self.check(config)
