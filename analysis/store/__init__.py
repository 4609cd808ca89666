"""The data layer over a query engine.

What grows with the store (purchases, clients) stays in the engine; the models receive
small frames of aggregates. Each aggregation is written once as an Ibis expression
(https://ibis-project.org), which compiles to DuckDB (embedded, the default) and to
PySpark (``engine = "spark"``) alike:

* :mod:`analysis.store.engine`: connect to an engine by name, with clear errors when it
  is not installed or cannot start;
* :mod:`analysis.store.tables`: open the Parquet tables a step reads, checking that each
  exists and has the columns and types the aggregates need;
* :mod:`analysis.store.aggregates`: the aggregations (the campaign-2 city x day panel,
  the segments step's per-client behaviour features).
"""
