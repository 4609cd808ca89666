"""The pipeline's steps: one module per step, each with ``run(config)``, runnable alone
(``python -m analysis.steps.<name>``) and through ``shopbayes run <name>``.
"""
