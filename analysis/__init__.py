"""shopbayes analysis: sources -> engine aggregates (store/) -> models (../models) ->
results (steps/, run by pipeline.py) -> report (render/); demo/ makes synthetic stores."""
