"""The data layer: the store's tables, from their files to the aggregates the models fit.

What grows with the store (purchases, clients) stays in a query engine; the models
receive small frames of aggregates. Each aggregation is written once as an Ibis
expression (https://ibis-project.org), which compiles to DuckDB (embedded, the default)
and to PySpark (``engine = "spark"``) alike:

* :mod:`~analysis.store.sources`: the store's tables (SQLite or Parquet) read in chunks,
  checked by the schemas and staged as Parquet for the engine;
* :mod:`~analysis.store.schemas`, :mod:`~analysis.store.loaders`,
  :mod:`~analysis.store.text_files`, :mod:`~analysis.store.id_files`: the schemas, the
  in-memory loaders and the readers of dirty text and id files;
  :mod:`~analysis.store.check_data` behind ``shopbayes check-data``;
* :mod:`~analysis.store.rules`: the cleaning rules and their in-memory reference;
  :mod:`~analysis.store.cleaning`: the same rules run in the engine;
* :mod:`~analysis.store.engine`: connect to an engine by name, with clear errors when it
  is not installed or cannot start; :mod:`~analysis.store.tables`: open a Parquet table
  checked for the columns a query needs, read one in batches;
* :mod:`~analysis.store.aggregates`: the aggregations (campaign-2 city x day panel,
  segment behaviour, campaign-1 period metrics, propensity cells, gender features, the
  hash split).
"""
