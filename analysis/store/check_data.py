"""``shopbayes check-data DIR``: validate a data folder and report every problem found.

Each file is checked on its own so one bad file does not hide the others. Problems are
``fatal`` (the analysis cannot use the file) or ``warning`` (reported, handled by a
documented rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.errors import DataError
from analysis.store import loaders
from analysis.store.id_files import IdFile, campaign_groups, read_id_file
from analysis.store.rules import conflicting_duplicates
from analysis.store.sources import read_parquet_table, table_origins
from analysis.store.text_files import read_as_usual


@dataclass(frozen=True)
class Problem:
    severity: str  # "fatal", "warning" or "note" (how a file was read; not a problem)
    file: str
    message: str


def _read_database_table(db: object, table: str) -> object:
    from analysis.store.database import read_table

    return read_table(db, table)  # type: ignore[arg-type]


def check_folder(folder: str | Path, database: str | None = None
                 ) -> tuple[list[Problem], dict[str, int]]:
    """Validate every known file in ``folder`` (and the tables of the ``database``
    connection URL, used before the folder's as in the clean step); return problems and
    table sizes.

    Every problem of every file is listed (a file's schema problems one per column and
    rule). Nothing is concluded from a table that failed to load: the comparisons across
    tables (purchases of unknown clients, campaign ids unknown to the client tables, ids
    in both client tables with different values) only run on tables that loaded.
    """
    folder = Path(folder)
    problems: list[Problem] = []
    sizes: dict[str, int] = {}
    if not folder.is_dir():
        return [Problem("fatal", str(folder), "data folder not found")], sizes
    failed: set[str] = set()

    def attempt(label: str, file: Path, fn):  # type: ignore[no-untyped-def]
        try:
            result = fn()
        except DataError as exc:
            failed.add(label)
            problems.extend(Problem("fatal", p.file, p.line()) for p in exc.problems)
            return None
        if hasattr(result, "__len__"):
            sizes[label] = len(result)
        text = getattr(result, "attrs", {}).get("text") or getattr(result, "encoding", None)
        if text and not read_as_usual(text):
            problems.append(Problem("note", str(file), f"read as {text}"))
        return result

    db = folder / loaders.DB_FILE
    tables: dict[str, object] = {}
    present: list[str] = []
    if db.exists():
        try:
            con = loaders.connect_readonly(db)
            present = loaders.db_tables(con)
            con.close()
        except DataError as exc:
            problems.append(Problem("fatal", str(db), str(exc)))
            failed.add("database")
    db_conn = None
    if database:
        from analysis.store.database import open_database

        try:
            db_conn = open_database(database)
        except DataError as exc:
            problems.extend(Problem("fatal", p.file, p.line()) for p in exc.problems)
            failed.add("database")
    origins = table_origins(folder, present, db_conn)  # the clean step's rule
    any_parquet = any(kind == "parquet" for kind, _ in origins.values())
    readers = {"parquet": read_parquet_table, "sqlite": lambda path, t: loaders.read_db_table(
        path, t), "csv": lambda path, t: loaders.read_client_csv(path),
        "database": lambda db, t: _read_database_table(db, t)}
    for t in loaders.DB_TABLES:
        if t in origins:
            kind, path = origins[t]
            tables[t] = attempt(t, path, lambda t=t, k=kind, p=path: readers[k](p, t))
        elif "database" not in failed and (db.exists() or any_parquet):
            where = db if db.exists() else folder
            found = f"found {present}" if db.exists() else "no database"
            problems.append(Problem("fatal", str(where), f"missing table '{t}' "
                                    f"(nor {t}.parquet); {found}"))
            failed.add(t)
    if "personal_data" not in tables and "personal_data" not in failed:
        problems.append(Problem("fatal", str(folder),
                                f"no client table: none of {loaders.DB_FILE}, "
                                f"personal_data.parquet, {loaders.CLIENTS_CSV}"))
        failed.add("personal_data")
    lost_path = folder / loaders.LOST_FILE
    lost = None
    if lost_path.exists():
        lost = attempt("personal_data_lost", lost_path,
                       lambda: loaders.read_client_csv(lost_path, lost=True))
    ids: dict[str, IdFile | None] = {}
    for label, name in loaders.ID_FILES.items():
        p = folder / name
        if p.exists():
            ids[label] = attempt(label, p, lambda p=p: read_id_file(p))
        else:
            problems.append(Problem("warning", str(p), "file absent: campaign 1 cannot run"))
    clients = tables.get("personal_data")
    # conclusions across tables only from tables that loaded
    clients_ok = clients is not None and "personal_data_lost" not in failed
    if clients_ok and lost is not None:
        dup = conflicting_duplicates(clients, lost)
        if dup["conflicting"]:
            cols = ", ".join(f"{c}: {n}" for c, n in dup["by_column"].items())
            problems.append(Problem(
                "warning", str(lost_path),
                f"{dup['conflicting']} of the {dup['ids_in_both']} ids also in the client "
                f"table have different values ({cols}; e.g. {'; '.join(dup['examples'])}); "
                f"rule: {dup['rule']}"))
    known: set[int] = set()
    if clients_ok:
        for t in (clients, lost):
            if t is not None:
                known |= set(t["id"].tolist())
    purchases = tables.get("purchases")
    if purchases is not None and known:
        unknown = ~purchases["id"].isin(known)
        if unknown.any():
            ex = purchases.loc[unknown, "id"].head(5).tolist()
            problems.append(Problem("warning", str(origins["purchases"][1]),
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
        for key, group in (("unknown_treated", "treated"), ("unknown_control", "control")):
            n = rep[f"{group}_ids"]
            if known and n and rep[key] == n:
                problems.append(Problem("fatal", str(folder), f"none of the {n} {group} ids is "
                                        "in the client tables: campaign 1 has no "
                                        f"{group} group (wrong file, or ids of another "
                                        "system?)"))
    if "purchases" not in tables and "purchases" not in failed and clients is not None:
        problems.append(Problem("warning", str(folder),
                                "no purchases table: steps that need purchases will be skipped"))
    return problems, sizes


def format_report(folder: str | Path, problems: list[Problem], sizes: dict[str, int]) -> str:
    lines = [f"Data folder: {folder}"]
    for k, v in sizes.items():
        lines.append(f"  {k:<28} {v:>10,}")
    fatal = [p for p in problems if p.severity == "fatal"]
    warn = [p for p in problems if p.severity == "warning"]
    notes = [p for p in problems if p.severity == "note"]
    for label, group in (("FATAL", fatal), ("warning", warn), ("note", notes)):
        for p in group:
            lines.append(f"{label}: {p.message}" if p.file in p.message
                         else f"{label}: {p.file}: {p.message}")
    lines.append(f"{len(fatal)} fatal problem(s), {len(warn)} warning(s)")
    return "\n".join(lines)
