

def test_metrics_table_names_the_metrics_for_readers_in_html_and_markdown():
    from analysis.render.helpers import metrics_table

    rec = {"model": "m", "roc_auc": 0.71234567, "log_loss": 0.2, "brier": 0.05, "ece": 0.003,
           "top_decile_lift": 2.5, "base_rate": 0.07, "mean_prediction": 0.069, "rows": 10}
    out = metrics_table([rec], caption="held out")
    data, _ = out._repr_mimebundle_()
    assert "<th>ROC-AUC</th>" in out.html and "roc_auc" not in out.html
    assert "0.7123" in out.html and "rows" not in out.html
    assert r"top\-decile lift" in data["text/markdown"]  # Markdown-escaped
    assert "roc_auc" not in data["text/markdown"]
