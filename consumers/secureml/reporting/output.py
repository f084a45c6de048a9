"""Check where a report goes, and write it there atomically (temporary file, then rename)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from reportlab.lib.utils import ImageReader

from secureml.audit._fs import replacing
from secureml.reporting.document import Document
from secureml.reporting.exceptions import (
    LogoError,
    LogoNotFoundError,
    OutputNotWritableError,
    ReportArgumentError,
    UnsupportedFormatError,
)
from secureml.reporting.html import write_html
from secureml.reporting.pdf import write_pdf

WRITERS: dict[str, Callable[[Document, Path], None]] = {".pdf": write_pdf, ".html": write_html, ".htm": write_html}

REPORT_MODE = 0o600  # reports quote the audit trail: readable by their owner only, like the trail itself
MAX_TITLE = 500  # characters of a report's title


def as_path(value: object, field: str) -> Path:
    """A path argument (str or os.PathLike of str, no NUL character), or ReportArgumentError naming it."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ReportArgumentError(field, f"must be a file path (a non-empty str without NUL), got {value!r:.80}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ReportArgumentError(field, f"must be a path of valid Unicode text, got {value!r:.80}") from None
    return Path(value)


def check_title(title: object, *, optional: bool = False) -> str | None:
    """A report title: a string of valid Unicode up to MAX_TITLE characters (None when ``optional``)."""
    if title is None and optional:
        return None
    if not isinstance(title, str):
        raise ReportArgumentError("title", f"must be a string, got {type(title).__name__}")
    if len(title) > MAX_TITLE:
        raise ReportArgumentError("title", f"must be at most {MAX_TITLE} characters, got {len(title):,}")
    try:
        title.encode()
    except UnicodeEncodeError as error:
        raise ReportArgumentError("title", f"must be valid Unicode text: {title[error.start:error.end]!a} at index "
                                  f"{error.start} is a lone surrogate") from None
    return title


def check_flag(value: object, field: str) -> bool:
    """A yes/no argument: True or False only."""
    if not isinstance(value, bool):
        raise ReportArgumentError(field, f"must be True or False, got {value!r:.40}")
    return value


def check_output(output_file: str | os.PathLike[str]) -> Path:
    """The output path, once its format is known and its directory is writable."""
    path = as_path(output_file, "output_file")
    if path.suffix.lower() not in WRITERS:
        raise UnsupportedFormatError(str(output_file), path.suffix)
    directory = path.parent
    if not directory.is_dir():
        raise OutputNotWritableError(str(output_file), f"directory {str(directory)!r} does not exist", bad_input=True)
    if path.is_dir():
        raise OutputNotWritableError(str(output_file), "it is a directory", bad_input=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputNotWritableError(str(output_file), f"directory {str(directory)!r} is not writable",
                                     bad_input=True)
    return path


def check_logo(logo_path: str | os.PathLike[str] | None) -> str | None:
    """The logo path as a string, once it is known to be a readable image."""
    if logo_path is None:
        return None
    if isinstance(logo_path, os.PathLike):
        logo_path = os.fspath(logo_path)
    if not isinstance(logo_path, str) or "\x00" in logo_path:
        raise LogoError(repr(logo_path), "it is not a file path (a str without NUL)")
    path = Path(logo_path)
    if not path.is_file():
        raise LogoNotFoundError(str(logo_path))
    try:
        width, height = ImageReader(str(path)).getSize()
    except Exception as error:  # ReportLab raises whatever PIL raises for a file it cannot decode
        raise LogoError(str(logo_path), f"not a readable image ({' '.join(str(error).split())})") from error
    if width <= 0 or height <= 0:
        raise LogoError(str(logo_path), "the image is empty")
    return str(path)


def write_atomically(document: Document, path: Path) -> Path:
    """Render the document to a temporary file beside path, then rename it over path."""
    try:
        with replacing(path, REPORT_MODE) as temporary:
            WRITERS[path.suffix.lower()](document, temporary)
    except OSError as error:
        raise OutputNotWritableError(str(path), error.strerror or str(error)) from error
    return path
