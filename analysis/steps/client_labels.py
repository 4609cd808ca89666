"""Labels that optional upstream steps add to a client table: the gender step's restored
gender and the segments step's cluster, joined in the engine (each only when that step
has a successful result; see :func:`analysis.pipeline.optional_table`)."""

from __future__ import annotations

from typing import Any

from analysis.config import Config
from analysis.pipeline import optional_table


def with_gender_labels(cfg: Config, con: Any, t: Any) -> Any:
    """``t`` (an Ibis table with ``id`` and ``gender``, int64) with a missing gender filled
    from the gender step's ``gender_label``; unchanged without that step."""
    g = optional_table(cfg, con, "gender", "clients.parquet",
                       {"id": "integer", "gender_label": "integer"})
    if g is None:
        return t
    g = g.select(id=g.id.cast("int64"), gender_label=g.gender_label.cast("int64"))
    t = t.left_join(g, "id").drop("id_right")
    return t.mutate(gender=t.gender.fill_null(t.gender_label)).drop("gender_label")


def with_clusters(cfg: Config, con: Any, t: Any) -> Any | None:
    """``t`` (an Ibis table with ``id``) with the segments step's ``cluster`` (int64; null
    for a client it did not assign), or ``None`` without that step."""
    k = optional_table(cfg, con, "segments", "assignments.parquet",
                       {"id": "integer", "cluster": "integer"})
    if k is None:
        return None
    return t.left_join(k.select(id=k.id.cast("int64"), cluster=k.cluster.cast("int64")),
                       "id").drop("id_right")
