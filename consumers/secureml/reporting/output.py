"""Check where a report goes, and write it there atomically (temporary file, then rename)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from reportlab.lib.utils import ImageReader

from secureml.audit._fs import replacing
from secureml.reporting.document import Document
from secureml.reporting.exceptions import LogoError, LogoNotFoundError, OutputNotWritableError, UnsupportedFormatError
from secureml.reporting.html import write_html
from secureml.reporting.pdf import write_pdf

WRITERS: dict[str, Callable[[Document, Path], None]] = {".pdf": write_pdf, ".html": write_html, ".htm": write_html}

REPORT_MODE = 0o600  # reports quote the audit trail: readable by their owner only, like the trail itself


def check_output(output_file: str | os.PathLike[str]) -> Path:
    """The output path, once its format is known and its directory is writable."""
    path = Path(output_file)
    if path.suffix.lower() not in WRITERS:
        raise UnsupportedFormatError(str(output_file), path.suffix)
    directory = path.parent
    if not directory.is_dir():
        raise OutputNotWritableError(str(output_file), f"directory {str(directory)!r} does not exist")
    if path.is_dir():
        raise OutputNotWritableError(str(output_file), "it is a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputNotWritableError(str(output_file), f"directory {str(directory)!r} is not writable")
    return path


def check_logo(logo_path: str | os.PathLike[str] | None) -> str | None:
    """The logo path as a string, once it is known to be a readable image."""
    if logo_path is None:
        return None
    path = Path(logo_path)
    if not path.is_file():
        raise LogoNotFoundError(str(logo_path))
    try:
        width, height = ImageReader(str(path)).getSize()
    except Exception as error:  # ReportLab raises whatever PIL raises for a file it cannot decode
        raise LogoError(str(logo_path), f"not a readable image ({error})") from error
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
