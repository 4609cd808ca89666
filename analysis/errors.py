"""Errors raised for bad input: each names the file, the column, the rule and the rows at
fault, and one error carries every problem found in a file, so one round of fixing is
enough."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: row numbers printed per problem
SHOWN_ROWS = 10


@dataclass(frozen=True)
class Problem:
    """One problem of an input file.

    ``rows`` are 0-based positions among the data rows (the first row after a CSV header,
    or the first row of a database table, is 0); they are printed 1-based, as a user counts
    them in a spreadsheet or a database browser ("data row 1" = the first data row, line 2
    of a CSV file with a header).
    """

    file: str
    problem: str
    column: str | None = None
    rule: str | None = None
    rows: tuple[int, ...] = field(default_factory=tuple)
    n_rows: int = 0

    def line(self) -> str:
        where = self.file
        if self.column:
            where += f", column '{self.column}'"
        msg = f"{where}: {self.problem}"
        if self.rule:
            msg += f" (rule: {self.rule})"
        if self.rows:
            shown = ", ".join(str(int(r) + 1) for r in self.rows[:SHOWN_ROWS])
            more = (f" (+{self.n_rows - SHOWN_ROWS} more)" if self.n_rows > SHOWN_ROWS
                    else "")
            label = "data row" if self.n_rows == 1 else f"{self.n_rows} data rows"
            msg += f" [{label}: {shown}{more}]"
        return msg


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
        0-based positions of the data rows at fault (printed 1-based; the first few only).
    n_rows
        How many rows are at fault (default ``len(rows)``).
    rule
        The rule that failed (``in_range(0, 58)``, ``not null``), when there is one.
    problems
        Several problems of the same file at once; the error then lists them all and
        ``problem`` is a one-line summary.
    """

    def __init__(
        self,
        file: str | Path,
        problem: str,
        column: str | None = None,
        rows: Sequence[object] | None = None,
        n_rows: int | None = None,
        rule: str | None = None,
        problems: Sequence[Problem] | None = None,
    ) -> None:
        self.file = str(file)
        self.problem = problem
        self.column = column
        self.rule = rule
        self.rows = [int(r) for r in rows] if rows is not None else []  # type: ignore[call-overload]
        self.n_rows = n_rows if n_rows is not None else len(self.rows)
        self.problems: list[Problem] = list(problems) if problems else [
            Problem(self.file, problem, column, rule, tuple(self.rows), self.n_rows)]
        super().__init__(self._message())

    @classmethod
    def from_problems(cls, file: str | Path, problems: Sequence[Problem]) -> DataError:
        """One error for every problem of ``file`` (at least one)."""
        if len(problems) == 1:
            p = problems[0]
            return cls(p.file, p.problem, p.column, p.rows, p.n_rows, p.rule)
        return cls(file, f"{len(problems)} problems", problems=problems)

    def _message(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0].line()
        lines = [f"{self.file}: {len(self.problems)} problems"]
        lines += [f"  - {p.line()}" for p in self.problems]
        return "\n".join(lines)


class StepError(RuntimeError):
    """A pipeline step could not run (missing upstream result, failed fit)."""
