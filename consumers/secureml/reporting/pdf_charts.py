"""Draw a BarChart with ReportLab's own graphics, so a PDF needs no browser to get its charts."""

from __future__ import annotations

from reportlab.graphics.charts.barcharts import BarChart as RLBarChart
from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.pdfbase.pdfmetrics import stringWidth

from secureml.reporting.document import BarChart
from secureml.reporting.pdf_style import BODY_FONT, INK, MUTED

AXIS_FONT_SIZE = 8
ROW_HEIGHT = 17
VERTICAL_HEIGHT = 200
MAX_VERTICAL_LABELS = 12
LEGEND_ROW = 13
MIN_AUTO_STEP_MAX = 6
MAX_BAR_WIDTH = 36


def chart_drawing(chart: BarChart, width: float) -> Drawing:
    """A Drawing of the chart that fits width points, with a legend when it has several series."""
    legend_rows = 0 if len(chart.series) < 2 else -(-len(chart.series) // 4)
    legend_height = legend_rows * LEGEND_ROW + (6 if legend_rows else 0)
    if chart.horizontal:
        plot, height = _horizontal(chart, width)
    else:
        plot, height = _vertical(chart, width)
    drawing = Drawing(width, height + legend_height)
    plot.y += legend_height
    series, series_colors = list(chart.series), list(chart.colors())
    if chart.horizontal and not chart.stacked:  # drawn bottom-up: reverse so the first series is on top
        series, series_colors = series[::-1], series_colors[::-1]
    plot.data = [tuple(s.values) for s in series]
    for index, color in enumerate(series_colors):
        plot.bars[index].fillColor = colors.HexColor(color)
        plot.bars[index].strokeColor = None
    plot.valueAxis.valueMin = 0
    if _max_total(chart) < MIN_AUTO_STEP_MAX:  # small counts: whole-number ticks, not 0.5 steps
        plot.valueAxis.valueStep = 1
        plot.valueAxis.valueMax = max(1.0, float(int(_max_total(chart)) + 1))
    plot.valueAxis.labelTextFormat = _thousands
    plot.valueAxis.labels.fontName = BODY_FONT
    plot.valueAxis.labels.fontSize = AXIS_FONT_SIZE
    plot.valueAxis.labels.fillColor = MUTED
    plot.valueAxis.visibleGrid = True
    plot.valueAxis.gridStrokeColor = colors.HexColor("#DDDDDD")
    plot.valueAxis.strokeColor = MUTED
    plot.categoryAxis.labels.fontName = BODY_FONT
    plot.categoryAxis.labels.fontSize = AXIS_FONT_SIZE
    plot.categoryAxis.labels.fillColor = INK
    plot.categoryAxis.strokeColor = MUTED
    if chart.stacked:
        plot.categoryAxis.style = "stacked"
    drawing.add(plot)
    if legend_rows:
        drawing.add(_legend(chart, width))
    return drawing


def _vertical(chart: BarChart, width: float) -> tuple[RLBarChart, float]:
    """A vertical bar chart with at most MAX_VERTICAL_LABELS category labels, rotated."""
    plot = VerticalBarChart()
    label_every = max(1, -(-len(chart.categories) // MAX_VERTICAL_LABELS))
    names = [c if i % label_every == 0 else "" for i, c in enumerate(chart.categories)]
    longest = max((stringWidth(n, BODY_FONT, AXIS_FONT_SIZE) for n in names), default=0)
    bottom = min(longest * 0.72 + 12, 90)  # labels rotated 45 degrees
    value_width = stringWidth(_thousands(_max_total(chart)), BODY_FONT, AXIS_FONT_SIZE) + 10
    plot.x, plot.y = value_width, bottom
    plot.width, plot.height = width - value_width - 10, VERTICAL_HEIGHT - bottom - 6
    plot.categoryAxis.categoryNames = names
    plot.categoryAxis.labels.angle = 45
    plot.categoryAxis.labels.boxAnchor = "ne"
    plot.categoryAxis.labels.dy = -2
    # Bar widths are relative units: keep bars at most MAX_BAR_WIDTH points wide when categories are few.
    bars = 1 if chart.stacked else len(chart.series)
    plot.barWidth, plot.barSpacing = 10, 1
    group = bars * plot.barWidth + (bars - 1) * plot.barSpacing
    filled = min(0.8, MAX_BAR_WIDTH * bars / (plot.width / max(len(chart.categories), 1)))
    plot.groupSpacing = group * (1 - filled) / filled
    return plot, VERTICAL_HEIGHT


def _horizontal(chart: BarChart, width: float) -> tuple[RLBarChart, float]:
    """A horizontal bar chart, first category on top, values written at the bar ends."""
    plot = HorizontalBarChart()
    label_width = max((stringWidth(c, BODY_FONT, AXIS_FONT_SIZE) for c in chart.categories), default=0) + 8
    value_width = stringWidth(_thousands(_max_total(chart)), BODY_FONT, AXIS_FONT_SIZE) + 12
    height = ROW_HEIGHT * max(len(chart.categories), 1) * (1 if chart.stacked else max(len(chart.series), 1)) + 24
    plot.x, plot.y = label_width, 18
    plot.width, plot.height = width - label_width - value_width, height - 24
    plot.categoryAxis.categoryNames = list(chart.categories)
    plot.categoryAxis.reverseDirection = 1
    plot.categoryAxis.labels.boxAnchor = "e"
    plot.categoryAxis.labels.dx = -4
    plot.barLabelFormat = _thousands
    plot.barLabels.boxAnchor = "w"
    plot.barLabels.dx = 3
    plot.barLabels.fontName = BODY_FONT
    plot.barLabels.fontSize = AXIS_FONT_SIZE
    plot.barLabels.fillColor = INK
    plot.barSpacing = 1
    plot.groupSpacing = 4
    return plot, height


def _legend(chart: BarChart, width: float) -> Legend:
    """A legend under the plot, up to four series per row."""
    legend = Legend()
    legend.x, legend.y = 10, LEGEND_ROW * -(-len(chart.series) // 4)
    legend.alignment = "right"
    legend.columnMaximum = -(-len(chart.series) // 4)
    legend.dx = legend.dy = 8
    legend.dxTextSpace = 4
    legend.deltax = width / 4
    legend.fontName = BODY_FONT
    legend.fontSize = AXIS_FONT_SIZE
    legend.fillColor = INK
    legend.strokeColor = None
    legend.colorNamePairs = [(colors.HexColor(c), s.name) for c, s in zip(chart.colors(), chart.series)]
    return legend


def _max_total(chart: BarChart) -> float:
    """The longest bar: the largest category total when stacked, else the largest value."""
    if chart.stacked:
        return max((sum(values) for values in zip(*(s.values for s in chart.series))), default=0.0)
    return max((max(s.values, default=0.0) for s in chart.series), default=0.0)


def _thousands(value: float) -> str:
    """An axis or bar value with thousands separators."""
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
