"""Parameter recovery over several seeds (slow: `make test-slow`)."""

from dataclasses import asdict

import pytest

from analysis.config import Config
from analysis.demo.store import DemoSpec
from models.observational import observational_check
from models.uplift import HierarchicalUplift
from tests.conftest import demo_store_frame

pytestmark = pytest.mark.slow


def _fit(folder, seed, design="randomized"):
    df, truth = demo_store_frame(folder, DemoSpec(clients=60_000, seed=seed, design=design))
    if design == "randomized":  # the control file is the comparison
        df = df[df.group != "untreated"]
    # the sampler settings the uplift step uses: the model as shipped
    settings = asdict(Config().sampler_for("uplift"))
    model = HierarchicalUplift(seed=seed, sampler_config=settings).fit(df)
    placebo = observational_check(df.reset_index(drop=True), seed)["placebo"]
    return model, truth, placebo


@pytest.mark.parametrize("design", ["randomized", "store"])
def test_effect_on_the_treated_is_covered(tmp_path, capsys, design):
    """The 94% HDI of the ATT on conversion, revenue and items per client covers the
    planted ATT (from the potential outcomes) in most seeds, on both campaign designs, and
    the placebo before the email (days 3..4) includes 0."""
    hits, total, placebo_ok, lines = 0, 0, 0, []
    seeds = (101, 102, 103)
    for seed in seeds:
        model, truth, placebo = _fit(tmp_path / str(seed), seed, design)
        assert model.convergence_.ok, model.convergence_.problems
        row = model.effects(0.35, 0.15).iloc[0]
        for name, key in (("conversion_uplift", "conversion"),
                          ("arpu_uplift", "revenue_per_client"),
                          ("items_uplift", "items_per_client")):
            lo, hi = row[f"{name}_hdi_low"], row[f"{name}_hdi_high"]
            hits += lo < truth["att"][key] < hi
            total += 1
            lines.append(f"  seed {seed} {key}: truth {truth['att'][key]:.4g}, "
                         f"HDI {lo:.4g}..{hi:.4g}")
        placebo_ok += bool(placebo["passes"])
    with capsys.disabled():
        print(f"\nuplift recovery ({design}): ATT covered {hits}/{total}, placebo includes 0 "
              f"in {placebo_ok}/{len(seeds)}\n" + "\n".join(lines))
    assert hits >= total - 1
    assert placebo_ok >= len(seeds) - 1
