"""The offline renderer of the Quarto project in ``report/`` (HTML and PDF through
Typst) and the helpers its pages call; named apart from the Quarto project itself.
"""
