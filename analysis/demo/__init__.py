"""Synthetic stores with the real schema, the real messiness and planted truth: the
store (SQLite, or Parquet in chunks for millions of clients), the one-click case's
stand-in, and the comparison with the figures published from the real tables.
"""
