"""Derive the small marginal-frequency table the synthetic generator needs.

Run once by a maintainer against the real client tables (``../shared/data/skillbox``);
the output ``analysis/demo/resources/marginals.json`` holds only counts and shares (no client
rows), which is what the generator samples from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def main(src: Path, out: Path) -> None:
    known = pd.read_csv(src / "personal_data.csv")
    lost = pd.read_csv(src / "personal_data.csv.gz")
    both = pd.concat([known, lost], ignore_index=True)
    cities = both.groupby("city").agg(country=("country", "first"), clients=("id", "size"))
    ages = {
        str(g): known.loc[known.gender == g, "age"].value_counts().sort_index().to_dict()
        for g in (0, 1)
    }
    higher = {
        str(g): float((known.loc[known.gender == g, "education"] == "высшее").mean())
        for g in (0, 1)
    }
    payload = {
        "source": "counts derived from personal_data.csv + personal_data.csv.gz (skillbox case)",
        "n_clients": int(len(both)),
        "n_lost": int(len(lost)),
        "max_id": int(both["id"].max()),
        "p_gender_1": float(known.gender.mean()),
        "p_higher_education_by_gender": higher,
        "age_counts_by_gender": {
            g: {str(k): int(v) for k, v in d.items()} for g, d in ages.items()
        },
        "cities": [
            {"city": int(c), "country": int(r.country), "clients": int(r.clients)}
            for c, r in cities.iterrows()
        ],
    }
    out.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
