"""``mtf-gan``: a thin click shell over plain functions in the ``gan`` modules.

Each command validates its options, calls one function and prints where the
results went. Errors the user can fix are ``click.ClickException``s (exit 1, or
``UsageError`` exit 2) with a message that names the file or option; no tracebacks.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from gan.config import ConfigError
from gan.util import UserError, ensure_venv_bin_on_path


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the package's user-facing errors into click errors (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        except UserError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mtf-faces")
def main() -> None:
    """mtf-gan: synthetic faces, data preparation, GAN training, generation and metrics for MTF."""
    ensure_venv_bin_on_path()


# ---------------------------------------------------------------------------- synth
# (commands are registered below; each lives beside the function it wraps)
