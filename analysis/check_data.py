"""``shopbayes check-data DIR``: validate a data folder and report every problem found.

Each file is checked on its own so one bad file does not hide the others. Problems are
``fatal`` (the analysis cannot use the file) or ``warning`` (reported, handled by a
documented rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis import loaders
from analysis.errors import DataError
from analysis.id_files import IdFile, campaign_groups, read_id_file


@dataclass(frozen=True)
class Problem:
    severity: str  # "fatal" or "warning"
    file: str
    message: str


def check_folder(folder: str | Path) -> tuple[list[Problem], dict[str, int]]:
    """Validate every known file in ``folder``; return problems and table sizes."""
    folder = Path(folder)
    problems: list[Problem] = []
    sizes: dict[str, int] = {}
    if not folder.is_dir():
        return [Problem("fatal", str(folder), "data folder not found")], sizes

    def attempt(label: str, file: Path, fn):  # type: ignore[no-untyped-def]
        try:
            result = fn()
        except DataError as exc:
            problems.append(Problem("fatal", str(file), str(exc)))
            return None
        if hasattr(result, "__len__"):
            sizes[label] = len(result)
        return result

    db = folder / loaders.DB_FILE
    tables = {}
    if db.exists():
        for t in loaders.DB_TABLES:
            tables[t] = attempt(t, db, lambda t=t: loaders.read_db_table(db, t))
    if tables.get("personal_data") is None and (folder / loaders.CLIENTS_CSV).exists():
        problems[:] = [p for p in problems if "missing table 'personal_data'" not in p.message]
        csv = folder / loaders.CLIENTS_CSV
        tables["personal_data"] = attempt("personal_data", csv,
                                          lambda: loaders.read_client_csv(csv))
    if "personal_data" not in tables:
        problems.append(Problem("fatal", str(folder),
                                f"no client table: neither {loaders.DB_FILE} "
                                f"nor {loaders.CLIENTS_CSV}"))
    lost_path = folder / loaders.LOST_FILE
    lost = None
    if lost_path.exists():
        lost = attempt("personal_data_lost", lost_path,
                       lambda: loaders.read_client_csv(lost_path, lost=True))
    ids: dict[str, IdFile | None] = {}
    for label, name in (("positive", loaders.POSITIVE_FILE), ("negative", loaders.NEGATIVE_FILE)):
        p = folder / name
        if p.exists():
            ids[label] = attempt(label, p, lambda p=p: read_id_file(p))
        else:
            problems.append(Problem("warning", str(p), "file absent: campaign 1 cannot run"))
    known: set[int] = set()
    for t in (tables.get("personal_data"), lost):
        if t is not None:
            known |= set(t["id"].tolist())
    purchases = tables.get("purchases")
    if purchases is not None and known:
        unknown = ~purchases["id"].isin(known)
        if unknown.any():
            ex = purchases.loc[unknown, "id"].head(5).tolist()
            problems.append(Problem("warning", str(db),
                                    f"{int(unknown.sum())} purchase rows of unknown client ids "
                                    f"(e.g. {ex}); they are dropped when cleaning"))
    if ids.get("positive") and ids.get("negative"):
        rep = campaign_groups(ids["positive"], ids["negative"], known or None).report()
        sizes["campaign1_treated_ids"] = int(rep["treated_ids"])
        sizes["campaign1_control_ids"] = int(rep["control_ids"])
        for key, what in (("overlap", "ids in both treated and control (excluded from both)"),
                          ("duplicated_treated", "duplicated ids in the treated file"),
                          ("duplicated_control", "duplicated ids in the control file"),
                          ("unknown_treated", "treated ids not in the client tables"),
                          ("unknown_control", "control ids not in the client tables")):
            if rep[key]:
                ex = rep["overlap_examples"] if key == "overlap" else (
                    rep["duplicate_examples"] if key.startswith("dup") else rep["unknown_examples"])
                problems.append(Problem("warning", str(folder), f"{rep[key]} {what} (e.g. {ex})"))
    if purchases is None and tables.get("personal_data") is not None:
        problems.append(Problem("warning", str(folder),
                                "no purchases table: steps that need purchases will be skipped"))
    return problems, sizes


def format_report(folder: str | Path, problems: list[Problem], sizes: dict[str, int]) -> str:
    lines = [f"Data folder: {folder}"]
    for k, v in sizes.items():
        lines.append(f"  {k:<28} {v:>10,}")
    fatal = [p for p in problems if p.severity == "fatal"]
    warn = [p for p in problems if p.severity == "warning"]
    for label, group in (("FATAL", fatal), ("warning", warn)):
        for p in group:
            lines.append(f"{label}: {p.message}" if p.file in p.message
                         else f"{label}: {p.file}: {p.message}")
    lines.append(f"{len(fatal)} fatal problem(s), {len(warn)} warning(s)")
    return "\n".join(lines)
