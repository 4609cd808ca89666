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

from analysis.errors import DataError

EDUCATION_LEVELS = ("среднее", "высшее")
LAST_DAY = 58
#: the one-click case's allowed values, after the known typos are fixed
ACTIVITY_LEVELS = ("Снизилась", "Прежний уровень")
SERVICE_TYPES = ("стандарт", "премиум")
REVENUE_PERIODS = ("препредыдущий_месяц", "предыдущий_месяц", "текущий_месяц")
TIME_PERIODS = ("предыдущий_месяц", "текущий_месяц")

#: Expected columns and their kind for each table ("int", "float", "str").
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
}


def coerce_columns(df: pd.DataFrame, table: str, source: str) -> pd.DataFrame:
    """Check that the table has its columns and give each its declared type.

    Raises
    ------
    DataError
        Naming the missing columns, or the column and rows holding a value that is not
        of the declared type (text in a numeric column, a fraction in an integer one,
        a gap in a column that must be filled).
    """
    spec = COLUMNS[table]
    missing = [c for c in spec if c not in df.columns]
    if missing:
        raise DataError(source, f"missing column(s) {missing}; found {list(df.columns)}")
    out = pd.DataFrame(index=df.index)
    for col, kind in spec.items():
        raw = df[col]
        if kind == "str":
            text = raw.astype("string").str.strip()
            text = text.mask(text == "")
            out[col] = text.astype(object).where(text.notna(), None)
        else:
            num = pd.to_numeric(raw, errors="coerce")
            blank = raw.isna() | raw.astype(str).str.strip().eq("")
            bad = num.isna() & ~blank
            if bad.any():
                rows = list(df.index[bad])
                examples = [repr(v) for v in raw[bad].head(3)]
                raise DataError(source, f"non-numeric value(s) such as {', '.join(examples)}",
                                column=col, rows=rows, n_rows=int(bad.sum()))
            if kind == "int":
                frac = num.notna() & (num != num.round())
                if frac.any():
                    raise DataError(source, "fractional value in an integer column",
                                    column=col, rows=list(df.index[frac]),
                                    n_rows=int(frac.sum()))
                out[col] = num.round().astype("Int64")
            else:
                out[col] = num.astype("Float64")
        if col not in NULLABLE[table] and out[col].isna().any():
            gaps = out[col].isna()
            raise DataError(source, "empty value(s) in a column that must be filled",
                            column=col, rows=list(df.index[gaps]), n_rows=int(gaps.sum()))
    return out


def validate(df: pd.DataFrame, table: str, source: str) -> pd.DataFrame:
    """Coerce and validate one table; return the typed frame.

    Raises
    ------
    DataError
        On the first failing column, naming rows and example values.
    """
    typed = coerce_columns(df, table, source)
    try:
        return SCHEMAS[table].validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
        first_col = fc["column"].iloc[0]
        part = fc[fc["column"] == first_col]
        checks = ", ".join(sorted(set(map(str, part["check"]))))
        examples = ", ".join(repr(v) for v in part["failure_case"].head(3))
        rows = [r for r in part["index"].tolist() if r is not None and r == r]
        others = sorted(set(map(str, fc["column"])) - {str(first_col)})
        also = f"; other columns failing: {others}" if others else ""
        raise DataError(source, f"fails {checks}: values such as {examples}{also}",
                        column=str(first_col), rows=rows, n_rows=len(part)) from None
