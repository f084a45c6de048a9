"""Read any supported dataset through DuckDB SQL without copying it.

pandas, Polars and pyarrow data are registered on a private in-memory connection; a
DuckDB relation is queried on its own connection (``relation.query``), so a relation over
a Parquet file or a database table is scanned lazily, never materialised first. Either
way SQL names the dataset :data:`TABLE`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import duckdb
import pyarrow as pa

from .exceptions import UnsupportedDatasetError

if TYPE_CHECKING:
    import pandas
    import polars

    Dataset: TypeAlias = "pandas.DataFrame" | pa.Table | "polars.DataFrame" | duckdb.DuckDBPyRelation

TABLE = "secureml_dataset"

_TEMPORAL_TYPES = ("DATE", "TIMESTAMP")


def quote_identifier(name: str) -> str:
    """Quote a column name for DuckDB SQL."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """Quote a string constant for DuckDB SQL."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class Column:
    """A column of the dataset and its DuckDB type."""

    name: str
    sql_type: str

    @property
    def is_text(self) -> bool:
        """Return True for columns whose values are scanned for patterns."""
        return self.sql_type == "VARCHAR" or self.sql_type.startswith("ENUM")

    @property
    def is_temporal(self) -> bool:
        """Return True for date and timestamp columns."""
        return self.sql_type.startswith(_TEMPORAL_TYPES)


class DatasetSource:
    """A dataset queried with DuckDB SQL in which it is called :data:`TABLE`."""

    def __init__(self, run: Callable[[str], duckdb.DuckDBPyRelation]) -> None:
        self._run = run

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a query over the dataset and return its rows."""
        return self._run(sql).fetchall()

    def arrow(self, sql: str) -> pa.Table:
        """Run a query over the dataset and return its result as an Arrow table."""
        return self._run(sql).to_arrow_table()

    def columns(self) -> list[Column]:
        """Return the dataset's columns in order."""
        return [Column(str(name), str(sql_type)) for name, sql_type, *_ in self.rows(f"DESCRIBE {TABLE}")]

    def count(self) -> int:
        """Return the number of rows of the dataset."""
        (count,) = self.rows(f"SELECT count(*) FROM {TABLE}")[0]
        return int(count)


def _is_frame(dataset: object) -> bool:
    """Return True for a pandas or Polars DataFrame, without importing either library."""
    pandas = sys.modules.get("pandas")
    polars = sys.modules.get("polars")
    return (pandas is not None and isinstance(dataset, pandas.DataFrame)) or (
        polars is not None and isinstance(dataset, polars.DataFrame)
    )


def open_dataset(dataset: Dataset) -> DatasetSource:
    """Wrap a pandas or Polars DataFrame, a pyarrow Table or a DuckDB relation for querying."""
    if isinstance(dataset, duckdb.DuckDBPyRelation):
        relation = dataset
        return DatasetSource(lambda sql: cast(duckdb.DuckDBPyRelation, relation.query(TABLE, sql)))
    if isinstance(dataset, pa.Table) or _is_frame(dataset):
        connection = duckdb.connect()
        try:
            connection.register(TABLE, dataset)
        except duckdb.Error as error:
            raise UnsupportedDatasetError(
                f"DuckDB cannot read this {type(dataset).__qualname__}: {error}. Give it at least "
                "one column, with one type per column."
            ) from error
        return DatasetSource(connection.sql)
    raise UnsupportedDatasetError(
        f"dataset must be a pandas DataFrame, a pyarrow Table, a Polars DataFrame or a DuckDB "
        f"relation; got {type(dataset).__module__}.{type(dataset).__qualname__}. Convert it "
        "first, e.g. pyarrow.Table.from_pylist(rows) or duckdb.read_parquet(path)."
    )
