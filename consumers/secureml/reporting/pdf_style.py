"""Fonts, colours and paragraph styles of the PDF report.

Bitstream Vera (shipped with ReportLab, so every install has it) is embedded: a sans-serif
drawn for screen legibility, with text sizes of 9 pt and up and dark ink on white.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import reportlab
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.styles import ParagraphStyle
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

BODY_FONT = "ReportSans"
BOLD_FONT = "ReportSans-Bold"
INK = colors.HexColor("#1A1A1A")
MUTED = colors.HexColor("#555555")
ACCENT = colors.HexColor("#0B3D91")
RULE = colors.HexColor("#B0B7C3")
HEADER_FILL = colors.HexColor("#E8ECF4")
ZEBRA_FILL = colors.HexColor("#F6F7F9")
TONES = {
    "normal": INK,
    "good": colors.HexColor("#146C2E"),
    "bad": colors.HexColor("#A8200D"),
    "muted": MUTED,
}
TABLE_FONT_SIZE = 9
TABLE_LEADING = 11


@cache
def register_fonts() -> None:
    """Register the embedded font family once per process."""
    fonts = Path(reportlab.__file__).parent / "fonts"
    for name, file in (
        (BODY_FONT, "Vera.ttf"),
        (BOLD_FONT, "VeraBd.ttf"),
        ("ReportSans-Italic", "VeraIt.ttf"),
        ("ReportSans-BoldItalic", "VeraBI.ttf"),
    ):
        pdfmetrics.registerFont(TTFont(name, str(fonts / file)))
    pdfmetrics.registerFontFamily(
        BODY_FONT, normal=BODY_FONT, bold=BOLD_FONT, italic="ReportSans-Italic", boldItalic="ReportSans-BoldItalic"
    )


@cache
def styles() -> dict[str, ParagraphStyle]:
    """The named paragraph styles of the report."""
    register_fonts()
    # Never cut a word at an arbitrary letter or hyphenate it: identifiers, paths and ids must copy
    # out whole (table cells break long ones after their separators, pdf._cell).
    body = ParagraphStyle("body", fontName=BODY_FONT, fontSize=10, leading=13.5, textColor=INK, spaceAfter=6,
                          splitLongWords=0, hyphenationLang="")
    cell = ParagraphStyle("cell", parent=body, fontSize=TABLE_FONT_SIZE, leading=TABLE_LEADING, spaceAfter=0)
    return {
        "title": ParagraphStyle("title", parent=body, fontName=BOLD_FONT, fontSize=24, leading=30, textColor=ACCENT,
                                spaceAfter=8),
        "subtitle": ParagraphStyle("subtitle", parent=body, fontSize=13, leading=17, textColor=MUTED, spaceAfter=18),
        "h1": ParagraphStyle("h1", parent=body, fontName=BOLD_FONT, fontSize=16, leading=20, textColor=ACCENT,
                             spaceBefore=14, spaceAfter=10),
        "h2": ParagraphStyle("h2", parent=body, fontName=BOLD_FONT, fontSize=12, leading=15, spaceBefore=10,
                             spaceAfter=6),
        "body": body,
        "note": ParagraphStyle("note", parent=body, fontSize=9, leading=12, textColor=MUTED),
        "cell": cell,
        "cell_right": ParagraphStyle("cell_right", parent=cell, alignment=TA_RIGHT),
        "cell_head": ParagraphStyle("cell_head", parent=cell, fontName=BOLD_FONT),
        "cell_head_right": ParagraphStyle("cell_head_right", parent=cell, fontName=BOLD_FONT, alignment=TA_RIGHT),
    }
