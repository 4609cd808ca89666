"""Declared schemas of the store's tables (pandera), and a checker that turns schema
failures into :class:`~analysis.errors.DataError` naming file, column and rows.

Types are coerced first with :func:`coerce_columns`, which reports text in numeric
columns row by row (SQLite stores whatever it is given), then the pandera schema checks
ranges, allowed values and uniqueness.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import pandera.pandas as pa

from analysis.errors import SHOWN_ROWS, DataError, Problem

EDUCATION_LEVELS = ("среднее", "высшее")
LAST_DAY = 58
#: the one-click case's allowed values, after the known typos are fixed
ACTIVITY_LEVELS = ("Снизилась", "Прежний уровень")
SERVICE_TYPES = ("стандарт", "премиум")
REVENUE_PERIODS = ("препредыдущий_месяц", "предыдущий_месяц", "текущий_месяц")
TIME_PERIODS = ("предыдущий_месяц", "текущий_месяц")

#: Expected columns and their kind for each table ("int", "float", "str").
APPAREL_CHANNELS = ("email", "mobile_push")
_CLIENT_ID = r"^\d{1,18}$|^[1-8]\d{18}$"  # a non-negative int64
_DATE = r"^\d{4}-\d{2}-\d{2}$"

COLUMNS: Mapping[str, Mapping[str, str]] = {
    "personal_data": {"id": "int", "gender": "int", "age": "int", "education": "str",
                      "country": "int", "city": "int"},
    "personal_data_lost": {"id": "int", "age": "int", "education": "str", "country": "int",
                           "city": "int"},
    "personal_data_coeffs": {"id": "int", "lbt_coef": "float", "ac_coef": "float",
                             "sm_coef": "float", "personal_coef": "float"},
    "purchases": {"id": "int", "product": "str", "colour": "str", "cost": "int",
                  "product_sex": "int", "base_sale": "int", "dt": "int"},
    # the second case, "В один клик" (column names as in its files)
    "market_file": {"id": "int", "Покупательская активность": "str", "Тип сервиса": "str",
                    "Разрешить сообщать": "str", "Маркет_актив_6_мес": "float",
                    "Маркет_актив_тек_мес": "int", "Длительность": "int",
                    "Акционные_покупки": "float", "Популярная_категория": "str",
                    "Средний_просмотр_категорий_за_визит": "int",
                    "Неоплаченные_продукты_штук_квартал": "int", "Ошибка_сервиса": "int",
                    "Страниц_за_визит": "int"},
    "market_money": {"id": "int", "Период": "str", "Выручка": "float"},
    "market_time": {"id": "int", "Период": "str", "минут": "int"},
    "money": {"id": "int", "Прибыль": "float"},
    # the apparel store's next-purchase case (19-digit client ids are read as text and
    # converted exactly: a float would round them)
    "apparel_purchases": {"client_id": "str", "quantity": "int", "price": "float",
                          "category_ids": "str", "date": "str", "message_id": "str"},
    "apparel_messages": {"bulk_campaign_id": "int", "client_id": "str", "message_id": "str",
                         "event": "str", "channel": "str", "date": "str", "created_at": "str"},
    "apparel_target": {"client_id": "str", "target": "int"},
}

#: Columns that may hold gaps (everything else must be filled).
NULLABLE: Mapping[str, frozenset[str]] = {
    "personal_data": frozenset({"education"}),
    "personal_data_lost": frozenset({"education"}),
    "personal_data_coeffs": frozenset({"lbt_coef", "ac_coef", "sm_coef"}),
    "purchases": frozenset({"colour", "product_sex"}),
    "market_file": frozenset(),
    "market_money": frozenset(),
    "market_time": frozenset(),
    "money": frozenset(),
    "apparel_purchases": frozenset({"message_id", "category_ids"}),
    "apparel_messages": frozenset(),
    "apparel_target": frozenset(),
}

_client_columns = {
    "id": pa.Column("Int64", pa.Check.ge(0), unique=True),
    "age": pa.Column("Int64", pa.Check.in_range(0, 120)),
    "education": pa.Column(object, pa.Check.isin(EDUCATION_LEVELS), nullable=True),
    "country": pa.Column("Int64", pa.Check.ge(0)),
    "city": pa.Column("Int64", pa.Check.ge(0)),
}

SCHEMAS: Mapping[str, pa.DataFrameSchema] = {
    "personal_data": pa.DataFrameSchema(
        {**_client_columns, "gender": pa.Column("Int64", pa.Check.isin([0, 1]))}
    ),
    "personal_data_lost": pa.DataFrameSchema(_client_columns),
    "personal_data_coeffs": pa.DataFrameSchema({
        "id": pa.Column("Int64", pa.Check.ge(0), unique=True),
        "personal_coef": pa.Column("Float64", pa.Check.in_range(0.0, 1.0)),
        "lbt_coef": pa.Column("Float64", nullable=True),
        "ac_coef": pa.Column("Float64", nullable=True),
        "sm_coef": pa.Column("Float64", nullable=True),
    }),
    "purchases": pa.DataFrameSchema({
        "id": pa.Column("Int64", pa.Check.ge(0)),
        "product": pa.Column(object, pa.Check.str_length(min_value=1)),
        "colour": pa.Column(object, nullable=True),
        "cost": pa.Column("Int64"),
        "product_sex": pa.Column("Int64", pa.Check.isin([0, 1]), nullable=True),
        "base_sale": pa.Column("Int64", pa.Check.isin([0, 1])),
        "dt": pa.Column("Int64", pa.Check.in_range(0, LAST_DAY)),
    }),
    "market_file": pa.DataFrameSchema({
        "id": pa.Column("Int64", pa.Check.ge(0), unique=True),
        "Покупательская активность": pa.Column(object, pa.Check.isin(ACTIVITY_LEVELS)),
        "Тип сервиса": pa.Column(object, pa.Check.isin(SERVICE_TYPES)),
        "Разрешить сообщать": pa.Column(object, pa.Check.isin(("да", "нет"))),
        "Маркет_актив_6_мес": pa.Column("Float64", pa.Check.ge(0)),
        "Маркет_актив_тек_мес": pa.Column("Int64", pa.Check.ge(0)),
        "Длительность": pa.Column("Int64", pa.Check.ge(0)),
        "Акционные_покупки": pa.Column("Float64", pa.Check.in_range(0.0, 1.0)),
        "Популярная_категория": pa.Column(object, pa.Check.str_length(min_value=1)),
        "Средний_просмотр_категорий_за_визит": pa.Column("Int64", pa.Check.ge(0)),
        "Неоплаченные_продукты_штук_квартал": pa.Column("Int64", pa.Check.ge(0)),
        "Ошибка_сервиса": pa.Column("Int64", pa.Check.ge(0)),
        "Страниц_за_визит": pa.Column("Int64", pa.Check.ge(0)),
    }),
    "market_money": pa.DataFrameSchema({
        "id": pa.Column("Int64", pa.Check.ge(0)),
        "Период": pa.Column(object, pa.Check.isin(REVENUE_PERIODS)),
        "Выручка": pa.Column("Float64", pa.Check.ge(0)),
    }, unique=["id", "Период"]),
    "market_time": pa.DataFrameSchema({
        "id": pa.Column("Int64", pa.Check.ge(0)),
        "Период": pa.Column(object, pa.Check.isin(TIME_PERIODS)),
        "минут": pa.Column("Int64", pa.Check.ge(0)),
    }, unique=["id", "Период"]),
    "money": pa.DataFrameSchema({
        "id": pa.Column("Int64", pa.Check.ge(0), unique=True),
        "Прибыль": pa.Column("Float64"),
    }),
    "apparel_purchases": pa.DataFrameSchema({
        "client_id": pa.Column(object, pa.Check.str_matches(_CLIENT_ID)),
        "quantity": pa.Column("Int64", pa.Check.ge(1)),
        "price": pa.Column("Float64", pa.Check.ge(0)),
        "category_ids": pa.Column(object, pa.Check.str_matches(r"^\[.*\]$"), nullable=True),
        "date": pa.Column(object, pa.Check.str_matches(_DATE)),
        "message_id": pa.Column(object, nullable=True),
    }),
    "apparel_messages": pa.DataFrameSchema({
        "bulk_campaign_id": pa.Column("Int64", pa.Check.ge(0)),
        "client_id": pa.Column(object, pa.Check.str_matches(_CLIENT_ID)),
        "message_id": pa.Column(object, pa.Check.str_length(min_value=1)),
        "event": pa.Column(object, pa.Check.str_matches(r"^[a-z_]+$")),
        "channel": pa.Column(object, pa.Check.isin(APPAREL_CHANNELS)),
        "date": pa.Column(object, pa.Check.str_matches(_DATE)),
        "created_at": pa.Column(object, pa.Check.str_matches(_DATE[:-1] + r" \d{2}:\d{2}:\d{2}$")),
    }),
    "apparel_target": pa.DataFrameSchema({
        "client_id": pa.Column(object, pa.Check.str_matches(_CLIENT_ID), unique=True),
        "target": pa.Column("Int64", pa.Check.isin([0, 1])),
    }),
}


#: a decimal comma (``0,45``), as Excel writes numbers in a Russian locale
_DECIMAL_COMMA = r"^\s*-?\d+,\d+\s*$"


def coerce_columns(df: pd.DataFrame, table: str, source: str
                   ) -> tuple[pd.DataFrame, list[Problem]]:
    """Give each declared column its type, collecting every problem on the way.

    A decimal comma in a float column (``0,45``) is read as a decimal point.

    Returns
    -------
    (typed, problems)
        The typed frame (columns that are missing or unusable are left out) and one
        :class:`~analysis.errors.Problem` per column and rule: a missing column, text in a
        numeric column, a fraction in an integer one, a gap in a column that must be
        filled. Rows are 0-based positions (printed 1-based).
    """
    spec = COLUMNS[table]
    problems: list[Problem] = []
    missing = [c for c in spec if c not in df.columns]
    if missing:
        problems.append(Problem(source, f"missing column(s) {missing}; found "
                                f"{list(df.columns)}", rule="required columns"))
    df = df.reset_index(drop=True)
    out = pd.DataFrame(index=df.index)
    for col, kind in spec.items():
        if col not in df.columns:
            continue
        raw = df[col]
        if kind == "str":
            text = raw.astype("string").str.strip()
            text = text.mask(text == "")
            out[col] = text.astype(object).where(text.notna(), None)
        else:
            if kind == "float":
                comma = raw.astype("string").str.match(_DECIMAL_COMMA).fillna(False)
                raw = raw.mask(comma.astype(bool), raw.astype("string").str.replace(
                    ",", ".", regex=False))
            num = pd.to_numeric(raw, errors="coerce")
            blank = raw.isna() | raw.astype(str).str.strip().eq("")
            bad = num.isna() & ~blank
            if bad.any():
                examples = [repr(v) for v in raw[bad].head(3)]
                problems.append(Problem(source, f"non-numeric value(s) such as "
                                        f"{', '.join(examples)}", col, f"{kind} values",
                                        _positions(bad), int(bad.sum())))
                num = num.where(~bad)
            if kind == "int":
                # beyond int64 (an export's 1e20) is no integer this store can hold
                huge = num.notna() & (num.abs() >= 2.0**63)
                if huge.any():
                    examples = [repr(v) for v in raw[huge].head(3)]
                    problems.append(Problem(source, "value(s) beyond the integer range such "
                                            f"as {', '.join(examples)}", col,
                                            "int64 range", _positions(huge),
                                            int(huge.sum())))
                    num = num.where(~huge)
                frac = num.notna() & (num != num.round())
                if frac.any():
                    problems.append(Problem(source, "fractional value in an integer column",
                                            col, "whole numbers", _positions(frac),
                                            int(frac.sum())))
                    num = num.where(~frac)
                out[col] = num.round().astype("Int64")
            else:
                out[col] = num.astype("Float64")
            gaps = blank
        if kind == "str":
            gaps = out[col].isna()
        if col not in NULLABLE[table] and gaps.any():
            problems.append(Problem(source, "empty value(s) in a column that must be filled",
                                    col, "not null", _positions(gaps), int(gaps.sum())))
    return out, problems


def _positions(mask: pd.Series) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.to_numpy().nonzero()[0][:SHOWN_ROWS])


def validate(df: pd.DataFrame, table: str, source: str) -> pd.DataFrame:
    """Coerce and validate one table; return the typed frame.

    Every column and every rule is checked before anything is raised (pandera's lazy
    validation after the type checks of :func:`coerce_columns`).

    Raises
    ------
    DataError
        Listing every problem: file, column, rule, how many rows and the first rows
        (numbered 1-based).
    """
    typed, problems = coerce_columns(df, table, source)
    schema = SCHEMAS[table]
    present = [c for c in schema.columns if c in typed.columns]
    if present:
        # rows already reported (a type error, a gap) are not checked again by the rules
        try:
            typed = schema.select_columns(present).validate(typed, lazy=True)
        except pa.errors.SchemaErrors as exc:
            problems += _schema_problems(exc.failure_cases, source, len(typed))
    if problems:
        raise DataError.from_problems(source, problems)
    return typed


def _schema_problems(fc: pd.DataFrame, source: str, n: int) -> list[Problem]:
    """One problem per (column, check) of pandera's failure cases."""
    out: list[Problem] = []
    fc = fc.assign(column=fc["column"].astype(str), check=fc["check"].astype(str))
    for (col, check), part in fc.groupby(["column", "check"], sort=False):
        if check in ("not_nullable", "column_in_dataframe"):
            continue  # reported by coerce_columns
        rows = [int(r) for r in part["index"].tolist() if r is not None and r == r]
        examples = ", ".join(repr(v.item() if hasattr(v, "item") else v)
                             for v in part["failure_case"].head(3))
        what = ("duplicated value(s)" if check == "field_uniqueness"
                else "value(s) not allowed")
        out.append(Problem(source, f"{what} such as {examples}", None if col == "None"
                           else col, check, tuple(sorted(set(rows))[:SHOWN_ROWS]),
                           len(set(rows)) if rows else len(part)))
    return out
