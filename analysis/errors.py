"""Errors raised for bad input: each names the file, the column and the rows at fault."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DataError(ValueError):
    """A problem with an input file that stops the analysis.

    Parameters
    ----------
    file
        The file (or ``file:table``) at fault.
    problem
        What is wrong, in plain words.
    column
        The column at fault, when there is one.
    rows
        Row labels (0-based data rows) at fault; only the first few are printed.
    """

    def __init__(
        self,
        file: str | Path,
        problem: str,
        column: str | None = None,
        rows: Sequence[object] | None = None,
        n_rows: int | None = None,
    ) -> None:
        self.file = str(file)
        self.problem = problem
        self.column = column
        self.rows = list(rows) if rows is not None else []
        self.n_rows = n_rows if n_rows is not None else len(self.rows)
        super().__init__(self._message())

    def _message(self) -> str:
        where = self.file
        if self.column:
            where += f", column '{self.column}'"
        msg = f"{where}: {self.problem}"
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:10])
            more = f" (+{self.n_rows - 10} more)" if self.n_rows > 10 else ""
            msg += f" [rows {shown}{more}]"
        return msg


class StepError(RuntimeError):
    """A pipeline step could not run (missing upstream result, failed fit)."""
