"""Render a Document as a PDF with ReportLab: cover, outline, page furniture and wrapped tables."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    Image,
    LongTable,
    NextPageTemplate,
    PageBreak,
    PageTemplate,
    Paragraph,
    Spacer,
    TableStyle,
)

from secureml.reporting import formatting as fmt
from secureml.reporting.document import BarChart, Document, Facts, Section, Table, Text
from secureml.reporting.pdf_charts import chart_drawing
from secureml.reporting.pdf_style import (
    BODY_FONT,
    BOLD_FONT,
    HEADER_FILL,
    INK,
    MUTED,
    RULE,
    TABLE_FONT_SIZE,
    TONES,
    ZEBRA_FILL,
    register_fonts,
    styles,
)

_BREAK_POINTS = re.compile(r"(?<=[_./])(?=\w)")  # after a separator that a word character follows
PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 1.5 * cm
FRAME_WIDTH = PAGE_WIDTH - 2 * MARGIN
LOGO_MAX = (6 * cm, 3 * cm)
CELL_PADDING = 4
SHORT_COLUMN_SHARE = 0.25
FREE_TEXT_MIN_WIDTH = 60
FREE_TEXT_SHARE = 0.4


def write_pdf(document: Document, path: Path) -> None:
    """Write the document to path as a PDF."""
    register_fonts()
    template = BaseDocTemplate(
        str(path),
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN + 0.4 * cm,
        bottomMargin=MARGIN,
        title=document.title,
        author=f"secureml-audit {document.version}",
        subject=document.subject,
        keywords=", ".join(document.keywords),
        creator=f"secureml-audit {document.version}",
        lang="en",
        displayDocTitle=1,
    )
    frame = Frame(MARGIN, MARGIN, FRAME_WIDTH, PAGE_HEIGHT - 2 * MARGIN - 0.4 * cm, id="body", leftPadding=0,
                  rightPadding=0, topPadding=0, bottomPadding=0)
    template.addPageTemplates([PageTemplate(id="cover", frames=[frame]), PageTemplate(id="body", frames=[frame])])
    story = [*_cover(document), NextPageTemplate("body"), PageBreak()]
    for index, section in enumerate(document.sections):
        if section.new_page and index > 0:
            story.append(PageBreak())
        story.extend(_section(section, index))
    template.build(story, canvasmaker=partial(_NumberedCanvas, document=document))


class _NumberedCanvas(Canvas):
    """A canvas that holds pages back until the end so each can say 'Page X of Y'."""

    def __init__(self, *args: Any, document: Document, **kwargs: Any) -> None:
        """A canvas as ReportLab makes it, plus the document whose header and footer it draws."""
        super().__init__(*args, **kwargs)
        self._document = document
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:  # noqa: N802 - ReportLab's name
        """Keep the finished page instead of emitting it."""
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        """Draw header and footer on every kept page, then write the file."""
        for number, page in enumerate(self._pages, start=1):
            self.__dict__.update(page)
            self._furniture(number, len(self._pages))
            super().showPage()
        super().save()

    def _furniture(self, number: int, total: int) -> None:
        """Header (title, report id) and footer (generation, page number) of one page."""
        document = self._document
        self.saveState()
        self.setStrokeColor(RULE)
        self.setLineWidth(0.5)
        top = PAGE_HEIGHT - MARGIN + 0.2 * cm
        if number > 1:
            self.setFont(BODY_FONT, 9)
            self.setFillColor(MUTED)
            self.drawString(MARGIN, top + 6, fmt.truncate(document.title, 70))
            self.drawRightString(PAGE_WIDTH - MARGIN, top + 6, f"Report {document.report_id}")
            self.line(MARGIN, top, PAGE_WIDTH - MARGIN, top)
        bottom = MARGIN - 0.6 * cm
        self.line(MARGIN, bottom + 12, PAGE_WIDTH - MARGIN, bottom + 12)
        self.setFont(BODY_FONT, 9)
        self.setFillColor(MUTED)
        self.drawString(
            MARGIN,
            bottom,
            f"Report {document.report_id} · generated {fmt.utc(document.generated_at)} UTC · "
            f"secureml-audit {document.version}",
        )
        self.drawRightString(PAGE_WIDTH - MARGIN, bottom, f"Page {number} of {total}")
        self.restoreState()


class _Heading(Paragraph):
    """A section heading that is also a PDF bookmark in the outline, kept on the page of what follows."""

    def __init__(self, text: str, style: ParagraphStyle, key: str) -> None:
        """A heading paragraph of plain text, bookmarked under key."""
        super().__init__(escape(text), style)
        self.keepWithNext = True
        self._title = text
        self._key = key

    def draw(self) -> None:
        """Draw the heading and register it in the outline."""
        super().draw()
        self.canv.bookmarkPage(self._key)
        self.canv.addOutlineEntry(self._title, self._key, level=0)


def _cover(document: Document) -> list[Flowable]:
    """The cover page: logo, title, subtitle and the report's key facts."""
    style = styles()
    story: list[Flowable] = []
    if document.logo_path is not None:
        logo = Image(document.logo_path)
        scale = min(LOGO_MAX[0] / logo.imageWidth, LOGO_MAX[1] / logo.imageHeight, 1.0)
        logo.drawWidth, logo.drawHeight = logo.imageWidth * scale, logo.imageHeight * scale
        logo.hAlign = "LEFT"
        story += [logo, Spacer(1, 1 * cm)]
    else:
        story.append(Spacer(1, 2 * cm))
    story += [
        Paragraph(escape(document.title), style["title"]),
        Paragraph(escape(document.subtitle), style["subtitle"]),
        _facts(document.cover_facts, label_share=0.28),
    ]
    return story


def _section(section: Section, index: int) -> list[Flowable]:
    """A section: its bookmarked heading, then each block."""
    story: list[Flowable] = [_Heading(section.title, styles()["h1"], f"section-{index}")]
    for block in section.blocks:
        if isinstance(block, Text):
            story.append(_text(block))
        elif isinstance(block, Facts):
            story += [_facts(block, label_share=0.5), Spacer(1, 8)]
        elif isinstance(block, Table):
            story += _table(block)
        elif isinstance(block, BarChart):
            story += _chart(block)
    return story


def _text(block: Text) -> Paragraph:
    """A paragraph coloured by its tone; good and bad lines are bold."""
    base = styles()["body"]
    style = ParagraphStyle(
        f"body-{block.tone}",
        parent=base,
        textColor=TONES[block.tone],
        fontName=BOLD_FONT if block.tone in ("good", "bad") else BODY_FONT,
    )
    return Paragraph(escape(block.text), style)


def _facts(block: Facts, *, label_share: float) -> LongTable:
    """Label/value pairs as a two-column table with wrapped values."""
    style = styles()
    label_width = FRAME_WIDTH * label_share
    rows = [
        [Paragraph(escape(label), style["cell_head"]), _cell(value, FRAME_WIDTH - label_width, style["cell"])]
        for label, value in block.items
    ]
    table = LongTable(rows, colWidths=[label_width, FRAME_WIDTH - label_width], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), BODY_FONT, TABLE_FONT_SIZE),
                ("TEXTCOLOR", (0, 0), (-1, -1), INK),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, RULE),
                ("TOPPADDING", (0, 0), (-1, -1), 3),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
            ]
        )
    )
    return table


def _table(block: Table) -> list[Flowable]:
    """A titled table that repeats its header on every page and wraps cells that do not fit."""
    style = styles()
    if not block.rows:
        return [_subheading(block.title), Paragraph(escape(block.empty_text), style["note"])]
    widths = _column_widths(block)
    caption = [Paragraph(escape(block.title), style["h2"])] + [""] * (len(widths) - 1)
    rights = [c.align == "right" for c in block.columns]
    header = [
        _cell(c.name, widths[i], style["cell_head_right" if rights[i] else "cell_head"])
        for i, c in enumerate(block.columns)
    ]
    cell_styles = [style["cell_right" if right else "cell"] for right in rights]
    body = [[_cell(value, widths[i], cell_styles[i]) for i, value in enumerate(row)] for row in block.rows]
    # The title is the first row, so it stays with the header and repeats with it on every page.
    table = LongTable([caption, header, *body], colWidths=widths, repeatRows=2, hAlign="LEFT")
    commands: list[tuple[Any, ...]] = [
        ("SPAN", (0, 0), (-1, 0)),
        ("LEFTPADDING", (0, 0), (-1, 0), 0),
        ("FONT", (0, 1), (-1, -1), BODY_FONT, TABLE_FONT_SIZE),
        ("FONT", (0, 1), (-1, 1), BOLD_FONT, TABLE_FONT_SIZE),
        ("TEXTCOLOR", (0, 1), (-1, -1), INK),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 1), (-1, 1), HEADER_FILL),
        ("LINEBELOW", (0, 1), (-1, 1), 0.75, RULE),
        ("ROWBACKGROUNDS", (0, 2), (-1, -1), [None, ZEBRA_FILL]),
        ("LEFTPADDING", (0, 1), (-1, -1), CELL_PADDING),
        ("RIGHTPADDING", (0, 1), (-1, -1), CELL_PADDING),
        ("TOPPADDING", (0, 1), (-1, -1), 2.5),
        ("BOTTOMPADDING", (0, 1), (-1, -1), 2.5),
    ]
    commands += [("ALIGN", (i, 1), (i, -1), "RIGHT") for i, right in enumerate(rights) if right]
    table.setStyle(TableStyle(commands))
    story: list[Flowable] = [table]
    if block.note:
        story.append(Paragraph(escape(block.note), style["note"]))
    return story


def _column_widths(block: Table) -> list[float]:
    """Widths that follow the content, like an HTML table's automatic layout.

    Every column gets at least its longest word (free-text columns at most FREE_TEXT_MIN_WIDTH);
    when those do not fit side by side, only the longest words are cut down (and split). Short
    columns (dates, names, counts: at most SHORT_COLUMN_SHARE of the page) then get their whole
    text, shortest first, while that fits beside the FREE_TEXT_SHARE of the page that free-text
    columns are promised; free-text columns then get that share, and the room left fills the
    columns that lack the least first.
    """
    pad = 2 * CELL_PADDING + 1  # +1: slack against rounding, so a fitting word is never split
    words: list[float] = []
    preferred: list[float] = []
    for index, column in enumerate(block.columns):
        texts = [(column.name, BOLD_FONT)] + [(row[index], BODY_FONT) for row in block.rows]
        word = max(stringWidth(w, f, TABLE_FONT_SIZE) for text, f in texts for w in text.split() or [""])
        words.append(min(word, FREE_TEXT_MIN_WIDTH) + pad if column.text else word + pad)
        preferred.append(max(max(stringWidth(text, f, TABLE_FONT_SIZE) for text, f in texts) + pad, words[-1]))
    if sum(preferred) <= FRAME_WIDTH:
        return [p * FRAME_WIDTH / sum(preferred) for p in preferred]
    if sum(words) >= FRAME_WIDTH:
        cap = _fill_level(words, FRAME_WIDTH)
        return [min(w, cap) for w in words]
    minimum = list(words)
    free_text = [i for i, column in enumerate(block.columns) if column.text]
    # The room free text is promised (its share of the page) is kept from the short columns.
    promised = sum(max(0.0, min(preferred[i], FRAME_WIDTH * FREE_TEXT_SHARE / len(free_text)) - minimum[i])
                   for i in free_text) if free_text else 0.0
    short = sorted((p, i) for i, p in enumerate(preferred) if p <= FRAME_WIDTH * SHORT_COLUMN_SHARE)
    for width, index in short:  # shortest first, while they fit
        if sum(minimum) - minimum[index] + width + promised > FRAME_WIDTH:
            break
        minimum[index] = width
    if free_text:  # free text shares FREE_TEXT_SHARE of the page, or what the other columns leave
        others = sum(m for i, m in enumerate(minimum) if i not in free_text)
        fair = min(FRAME_WIDTH * FREE_TEXT_SHARE, FRAME_WIDTH - others) / len(free_text)
        for index in free_text:
            minimum[index] = max(minimum[index], min(preferred[index], fair))
    needs = [p - m for p, m in zip(preferred, minimum)]
    level = _fill_level(needs, FRAME_WIDTH - sum(minimum))
    return [m + min(n, level) for m, n in zip(minimum, needs)]


def _fill_level(needs: list[float], room: float) -> float:
    """The level L at which giving each column min(need, L) adds up to room (water-filling)."""
    remaining = room
    ordered = sorted(needs)
    for index, need in enumerate(ordered):
        share = remaining / (len(ordered) - index)
        if need > share:
            return share
        remaining -= need
    return ordered[-1]


def _cell(value: str, width: float, style: ParagraphStyle) -> str | Paragraph:
    """Plain text when it fits the column (fast), else a wrapping Paragraph.

    A word too long for the column (an identifier such as customer_data_anonymized, a path, a
    dotted name) is broken only after its separators ('_', '.', '/'), with no hyphen added, so
    that what a reader copies is the identifier; a part with no separator is never split.
    """
    room = width - 2 * CELL_PADDING
    if stringWidth(value, style.fontName, style.fontSize) <= room:
        return value
    words = []
    for word in value.split(" "):
        if stringWidth(word, style.fontName, style.fontSize) <= room:
            words.append(escape(word))
            continue
        lines, line = [], ""
        for part in _BREAK_POINTS.split(word):
            if line and stringWidth(line + part, style.fontName, style.fontSize) > room:
                lines.append(line)
                line = part
            else:
                line += part
        lines.append(line)
        words.append("<br/>".join(escape(piece) for piece in lines))
    return Paragraph(" ".join(words), style)


def _chart(block: BarChart) -> list[Flowable]:
    """A titled chart, or a note when there is nothing to draw."""
    if block.is_empty:
        return [_subheading(block.title), Paragraph("No data to chart in scope.", styles()["note"])]
    return [_subheading(block.title), chart_drawing(block, FRAME_WIDTH), Spacer(1, 6)]


def _subheading(text: str) -> Paragraph:
    """A block title that stays on the page of the block."""
    title = Paragraph(escape(text), styles()["h2"])
    title.keepWithNext = True
    return title
