"""Render a Document as one self-contained HTML file: inline CSS, inline plotly.js, inline logo.

Nothing is fetched from the network when the file is opened, so it works offline and leaks
no request to a CDN.
"""

from __future__ import annotations

import base64
import mimetypes
from html import escape
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from secureml.reporting import formatting as fmt
from secureml.reporting.document import BarChart, Document, Facts, Section, Table, Text

FONT_STACK = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Verdana, sans-serif"
_CSS = """
:root { color-scheme: light; }
body { font-family: %(font)s; font-size: 16px; line-height: 1.5; color: #1a1a1a; background: #fff;
       max-width: 72rem; margin: 0 auto; padding: 1.5rem; }
h1 { color: #0b3d91; font-size: 2rem; margin: .5rem 0; }
h2 { color: #0b3d91; border-bottom: 2px solid #b0b7c3; padding-bottom: .25rem; margin-top: 2.5rem; }
h3 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
.subtitle { color: #555; font-size: 1.2rem; margin-top: 0; }
.logo { max-width: 14rem; max-height: 7rem; }
.tone-good { color: #146c2e; font-weight: 600; } .tone-bad { color: #a8200d; font-weight: 600; }
.tone-muted, .note { color: #555; }
.note { font-size: .9rem; }
dl.facts { display: grid; grid-template-columns: minmax(12rem, max-content) 1fr; gap: .25rem 1.5rem; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%%; font-size: .9rem; }
caption { text-align: left; font-weight: 600; font-size: 1.1rem; padding: .5rem 0; }
th, td { text-align: left; vertical-align: top; padding: .3rem .5rem; border-bottom: 1px solid #dde1e8;
         overflow-wrap: anywhere; }
th { background: #e8ecf4; position: sticky; top: 0; }
tbody tr:nth-child(even) { background: #f6f7f9; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
nav ol { columns: 2; }
a { color: #0b3d91; }
footer { margin-top: 3rem; border-top: 1px solid #b0b7c3; color: #555; font-size: .9rem; padding-top: .5rem; }
""" % {"font": FONT_STACK}


def write_html(document: Document, path: Path) -> None:
    """Write the document to path as a single HTML file."""
    has_charts = any(isinstance(b, BarChart) and not b.is_empty for s in document.sections for b in s.blocks)
    script = f"<script>{get_plotlyjs()}</script>" if has_charts else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="secureml-audit {escape(document.version)}">',
        f"<title>{escape(document.title)}</title><style>{_CSS}</style>{script}</head><body>",
        _cover(document),
        _contents(document.sections),
        "<main>",
        *(_section(section, index) for index, section in enumerate(document.sections)),
        "</main>",
        f"<footer>Report {escape(document.report_id)} · generated {escape(fmt.utc(document.generated_at))} UTC · "
        f"secureml-audit {escape(document.version)}</footer>",
        "</body></html>",
    ]
    path.write_text("\n".join(parts), encoding="utf-8")


def _cover(document: Document) -> str:
    """The header: logo (as a data: URI), title, subtitle and key facts."""
    logo = ""
    if document.logo_path is not None:
        mime = mimetypes.guess_type(document.logo_path)[0] or "image/png"
        data = base64.b64encode(Path(document.logo_path).read_bytes()).decode("ascii")
        logo = f'<img class="logo" src="data:{mime};base64,{data}" alt="Logo">'
    return (
        f"<header>{logo}<h1>{escape(document.title)}</h1>"
        f'<p class="subtitle">{escape(document.subtitle)}</p>{_facts(document.cover_facts)}</header>'
    )


def _contents(sections: tuple[Section, ...]) -> str:
    """A linked table of contents."""
    items = "".join(f'<li><a href="#section-{i}">{escape(s.title)}</a></li>' for i, s in enumerate(sections))
    return f'<nav aria-label="Contents"><h2>Contents</h2><ol>{items}</ol></nav>'


def _section(section: Section, index: int) -> str:
    """A section with its blocks."""
    blocks = []
    for block in section.blocks:
        if isinstance(block, Text):
            blocks.append(f'<p class="tone-{block.tone}">{escape(block.text)}</p>')
        elif isinstance(block, Facts):
            blocks.append(_facts(block))
        elif isinstance(block, Table):
            blocks.append(_table(block))
        elif isinstance(block, BarChart):
            blocks.append(_chart(block))
    return f'<section id="section-{index}"><h2>{escape(section.title)}</h2>{"".join(blocks)}</section>'


def _facts(block: Facts) -> str:
    """Label/value pairs as a description list."""
    items = "".join(f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>" for label, value in block.items)
    return f'<dl class="facts">{items}</dl>'


def _table(block: Table) -> str:
    """A captioned table, or its empty text."""
    if not block.rows:
        return f'<h3>{escape(block.title)}</h3><p class="note">{escape(block.empty_text)}</p>'
    classes = [' class="num"' if c.align == "right" else "" for c in block.columns]
    head = "".join(f'<th scope="col"{k}>{escape(c.name)}</th>' for c, k in zip(block.columns, classes))
    body = "".join(
        "<tr>" + "".join(f"<td{k}>{escape(v)}</td>" for v, k in zip(row, classes)) + "</tr>" for row in block.rows
    )
    note = f'<p class="note">{escape(block.note)}</p>' if block.note else ""
    return (
        f'<div class="table-wrap"><table><caption>{escape(block.title)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}"
    )


def _chart(block: BarChart) -> str:
    """An interactive Plotly bar chart (plotly.js is inlined once in the head)."""
    if block.is_empty:
        return f'<h3>{escape(block.title)}</h3><p class="note">No data to chart in scope.</p>'
    figure = go.Figure()
    for series, color in zip(block.series, block.colors()):
        values, categories = list(series.values), list(block.categories)
        figure.add_trace(
            go.Bar(
                name=series.name,
                x=values if block.horizontal else categories,
                y=categories if block.horizontal else values,
                orientation="h" if block.horizontal else "v",
                marker_color=color,
                hovertemplate=f"%{{{'y' if block.horizontal else 'x'}}}: %{{{'x' if block.horizontal else 'y'}:,}}"
                f" {escape(block.value_label)}<extra>{escape(series.name)}</extra>",
            )
        )
    rows = len(block.categories) * (1 if block.stacked else len(block.series))
    figure.update_layout(
        title={"text": block.title},
        barmode="stack" if block.stacked else "group",
        height=max(320, 26 * rows + 140) if block.horizontal else 420,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        font={"family": FONT_STACK, "size": 13, "color": "#1a1a1a"},
        plot_bgcolor="#ffffff",
        showlegend=len(block.series) > 1,
        legend={"orientation": "h", "y": -0.2},
    )
    axis = {"automargin": True, "gridcolor": "#dddddd"}
    figure.update_xaxes(**axis)
    figure.update_yaxes(**axis, autorange="reversed" if block.horizontal else True)
    config = {"displaylogo": False, "responsive": True}
    body: str = figure.to_html(full_html=False, include_plotlyjs=False, config=config)
    return f'<figure aria-label="{escape(block.title)}">{body}</figure>'
