"""Command line: thin wrappers that parse options, call the library, and turn user errors into
one line on stderr with a non-zero exit (no traceback)."""

from __future__ import annotations

import sys
from typing import Optional  # noqa: UP035  (typer needs Optional on py3.10)

import typer

from .errors import RecBackdoorError

app = typer.Typer(
    help="Backdoor attacks (BadRec) and defenses (P-Scanner) for LLM-based recommenders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Prepare datasets and inspect them.", no_args_is_help=True)
app.add_typer(data_app, name="data")


# --------------------------------------------------------------------------- data (issue 2)


# --------------------------------------------------------------------------- attack (issue 3)


# --------------------------------------------------------------------------- victims (issue 4)


# --------------------------------------------------------------------------- defense (issue 5)


# --------------------------------------------------------------------------- entry point


def main(argv: Optional[list[str]] = None) -> int:  # noqa: UP045
    """Run the CLI; user errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="recbackdoor")
    except SystemExit as exc:  # normal end, --help and usage errors (click prints those)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except RecBackdoorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc.filename or exc}: file not found", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
