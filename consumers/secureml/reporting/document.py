"""Format-neutral model of a report: the PDF and HTML renderers both draw a Document."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

Tone = Literal["normal", "good", "bad", "muted"]

# Okabe-Ito colours: distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")
PASSED_COLOR = "#009E73"
FAILED_COLOR = "#D55E00"


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text (never markup); tone colours status lines."""

    text: str
    tone: Tone = "normal"


@dataclass(frozen=True)
class Facts:
    """Label/value pairs shown as a two-column list."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Column:
    """A table column: header text, alignment, and whether it holds free text (widths follow the content).

    Free text may be broken anywhere, so its long words never squeeze the other columns.
    """

    name: str
    align: Literal["left", "right"] = "left"
    text: bool = False


@dataclass(frozen=True)
class Table:
    """A table of pre-formatted cells; total_rows counts the rows before truncation."""

    title: str
    columns: tuple[Column, ...]
    rows: list[tuple[str, ...]]
    total_rows: int
    empty_text: str = "None."
    note: str = ""

    @property
    def truncated(self) -> bool:
        """Whether rows holds fewer rows than the data has."""
        return self.total_rows > len(self.rows)


@dataclass(frozen=True)
class Series:
    """One named series of values, aligned with the chart's categories; color is '#rrggbb' or automatic."""

    name: str
    values: tuple[float, ...]
    color: str | None = None


@dataclass(frozen=True)
class BarChart:
    """A bar chart; several series are stacked or grouped side by side."""

    title: str
    categories: tuple[str, ...]
    series: tuple[Series, ...]
    horizontal: bool = False
    stacked: bool = False
    value_label: str = "events"

    @property
    def is_empty(self) -> bool:
        """Whether the chart has nothing to draw."""
        return not self.categories or not any(any(s.values) for s in self.series)

    def colors(self) -> tuple[str, ...]:
        """The colour of each series: its own, else the next palette colour."""
        return tuple(s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(self.series))


Block = Text | Facts | Table | BarChart


@dataclass(frozen=True)
class Section:
    """A titled part of the report."""

    title: str
    blocks: tuple[Block, ...]
    new_page: bool = False


@dataclass(frozen=True)
class Document:
    """Everything a renderer needs: cover, sections and the identity shown on every page."""

    title: str
    subtitle: str
    report_id: str
    generated_at: datetime
    version: str
    cover_facts: Facts
    sections: tuple[Section, ...]
    logo_path: str | None = None
    subject: str = ""
    keywords: tuple[str, ...] = field(default_factory=tuple)


def without_charts(document: Document) -> Document:
    """The same document with every chart removed (include_charts=False)."""
    sections = tuple(
        replace(section, blocks=tuple(b for b in section.blocks if not isinstance(b, BarChart)))
        for section in document.sections
    )
    return replace(document, sections=tuple(s for s in sections if s.blocks))
