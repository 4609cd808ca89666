"""Configuration: one TOML file (``shopbayes.toml``) over defaults written here.

Every number a stakeholder sees traces back to this file and the data. Example::

    data_dir = "data/raw"
    seed = 7

    [sampler]
    draws = 1000

    [business]
    margin = 0.35
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from analysis.store.engine import ENGINES
from analysis.store.loaders import CLIENTS_CSV, DB_FILE
from models.sampling import SamplerSettings

CONFIG_FILE = "shopbayes.toml"


#: MCMC settings shared by every Bayesian fit (draws, tune, chains, target_accept, backend).
SamplerConfig = SamplerSettings


@dataclass(frozen=True)
class BusinessConfig:
    """Business inputs of the profit decisions (documented defaults).

    ``margin`` is the gross margin on list price; ``discount_depth`` the share of the
    list price given away by campaign 1's personal discount (revenue in the data is what
    clients paid, so treated revenue is already net of the discount).
    """

    margin: float = 0.35
    discount_depth: float = 0.15
    campaign2_discount_depth: float = 0.10
    contact_cost: float = 0.0


@dataclass(frozen=True)
class GenderConfig:
    """Gender-imputer settings for stores of any size.

    The imputer is cross-validated and fitted on at most ``fit_sample`` clients with known
    gender, drawn in the engine by a hash of the client id (the same share of each gender;
    every known client while there are fewer, as in the real store's 89,000); the lost
    clients are scored in batches of ``score_batch`` streamed from the engine, so memory
    does not grow with the store.
    """

    fit_sample: int = 100_000
    score_batch: int = 200_000


@dataclass(frozen=True)
class SegmentsConfig:
    """Segmentation settings.

    The mixture is fitted on clients with at least ``min_items`` items outside the
    campaign-1 window (fewer items say too little about a client's tastes); every client
    with purchases is then assigned with membership probabilities, and clients without
    purchases form a "no history" group (cluster -1).
    """

    k_min: int = 2
    k_max: int = 10
    criterion: str = "icl"
    covariance_types: tuple[str, ...] = ("full", "diag")
    min_items: int = 6
    stability_seeds: tuple[int, ...] = (1, 2, 3)
    #: the mixture is searched and fitted on at most this many clients with enough items
    #: (a hash sample of client ids; every such client while there are fewer, as in the
    #: real store's 43,000); every client is then assigned in batches
    fit_sample: int = 60_000
    assign_batch: int = 200_000


@dataclass(frozen=True)
class PropensityConfig:
    """Purchase-propensity settings: the target city and the held-out share of clients
    (the model is fitted on the rest and compared on them with gradient boosting)."""

    target_country: int = 32
    target_city: int = 1188
    holdout_share: float = 0.2
    top_categories: int = 3
    #: cities with fewer clients are pooled as "other" (each client brings one cell per
    #: category, so a city of 1,000 clients is 29,000 client x category rows)
    min_city_clients: int = 1000
    #: at most this many cities besides the target city keep a level (most clients first):
    #: the real-scale demo has 20 above ``min_city_clients``, a 1,000,000-client store 75
    max_cities: int = 25
    #: target-city clients scored per batch (each brings one row per category: 200,000
    #: clients made 5.8 million rows and a 3.5 GiB peak at 1,000,000 clients)
    score_batch: int = 50_000
    #: training clients with purchases before the window whose client x category rows
    #: the Bayesian model fits (a hash sample per stratum; every client without history
    #: is in exact cells): contacted and not contacted. The sampler's cost grows with the
    #: rows, not with the store
    fit_contacted: int = 800
    fit_not_contacted: int = 2_500
    #: share of the sampled training rows without a purchase kept (case-control sampling,
    #: corrected exactly by an offset)
    negative_rate: float = 0.1
    #: held-out clients with history evaluated per stratum (contacted / not), at most
    holdout_clients: int = 25_000
    #: target clients (best category each) whose posterior draws make the budget curve
    budget_clients: int = 50_000
    #: held-out rows kept in the uplift evaluation: estimated P(contacted) within
    #: [overlap, 1 - overlap] (inverse-probability weights need both arms possible)
    overlap: float = 0.01
    #: Bayesian-bootstrap replicates of the uplift metrics' intervals
    bootstrap_draws: int = 200


@dataclass(frozen=True)
class NextPurchaseConfig:
    """Next-purchase and customer-value settings (step ``next_purchase``): the models
    learn from days ``0..calibration_end`` and are judged on days ``calibration_end + 1 ..
    last_day`` (the holdout period); the deployed fit uses every day."""

    calibration_end: int = 38
    last_day: int = 58
    #: share of clients held out (hash of the id): the classifier learns on the rest,
    #: both models are judged on these
    holdout_share: float = 0.3
    #: pool the purchase process by city (partial pooling; the ``pool_cities`` largest
    #: keep a level, the rest are "other"); the report says whether it beat one set of
    #: parameters on the held-out clients. Not by cluster: the segments step clusters all
    #: 59 days, the holdout included
    pool_by_city: bool = True
    pool_cities: int = 4
    #: measure time in the store's activity (clients buying per day, relative to the mean):
    #: BG/NBD assumes rates that do not change with the calendar, and buying declines over
    #: the two months (see models.btyd.ActivityClock); false: calendar days
    activity_clock: bool = True
    #: days whose mean activity measures the horizon ahead
    forecast_days: int = 14
    #: time starts at day 0 for every client (the store's clients were there before the
    #: data begin; every purchase day counts) and the fit is zero-truncated to the clients
    #: who bought; false: the textbook BG/NBD, whose clock starts at the first purchase and
    #: so over-rates a client whose first purchase in the data came late
    window_birth: bool = True
    #: clients the Gamma-Gamma spend model is fitted on (about as many: a hash sample of
    #: those with a repeat purchase day; three parameters need no more) and its draws per chain (at
    #: real scale 20,000 clients x 800 draws reached bulk / tail ESS 1,517 / 1,138 in 12 s;
    #: 5,000 x 500 draws 854 / 441 in 1.9 s)
    spend_fit_clients: int = 5_000
    spend_draws: int = 800
    #: training clients the boosting baseline learns from (about as many: a hash sample
    #: of the training clients when there are more)
    classifier_clients: int = 40_000
    #: held-out clients both models are judged on (about as many: a hash sample of the
    #: held-out clients when there are more; the real-scale demo holds out 29,931)
    holdout_clients: int = 100_000
    #: clients whose cells a BG/NBD fit reads (about as many: a hash sample when there
    #: are more; every client predicted all the same). Four parameters need no more, and
    #: past about a million clients the posterior is so sharp that on the 10-million-client
    #: demo the two chains stuck apart (r_hat 2.25) where a 10% sample agreed (r_hat 1.01)
    bgnbd_fit_clients: int = 500_000
    #: clients predicted at once when every client's next period and value are written
    #: (streamed from the engine: memory holds one batch whatever the store's size)
    score_batch: int = 200_000
    #: also judge boosting as it could be deployed: trained on the period before the
    #: holdout (features up to ``calibration_end`` minus the holdout's length, labels in
    #: the next as many days), since the holdout's own labels are never there when a
    #: forecast is needed
    previous_period_baseline: bool = True
    #: held-out clients explained with SHAP values
    shap_clients: int = 2_000
    #: customer value horizon (days) after the last day
    value_horizon_days: int = 90
    #: posterior draws kept per client for intervals
    predict_draws: int = 400


@dataclass(frozen=True)
class ApparelConfig:
    """The apparel store's next-purchase case (step ``apparel``): its folder (empty: the
    ``SHOPBAYES_APPAREL_DATA`` environment variable, else ``data/apparel`` when it holds
    the files, else the stand-in in ``data/demo_apparel``), the share of clients held out
    and the target's horizon."""

    data_dir: str = ""
    holdout_share: float = 0.3
    horizon_days: int = 90
    demo_clients: int = 5000
    classifier_clients: int = 40_000
    shap_clients: int = 2_000


APPAREL_DEMO_DIR = Path("data/demo_apparel")


@dataclass(frozen=True)
class OneClickConfig:
    """The second case ("В один клик" online store): where its files are and the settings
    of its cleaning, model comparison and action segments (documented defaults).

    ``data_dir`` empty means: the ``SHOPBAYES_ONE_CLICK_DATA`` environment variable, else
    ``data/one_click`` when it holds ``market_file.csv``, else the synthetic stand-in in
    ``data/demo_one_click`` (written by ``shopbayes demo-data``).
    """

    data_dir: str = ""
    outlier_factor: float = 10.0
    outlier_rule: str = "replace"
    outer_folds: int = 5
    inner_folds: int = 5
    permutation_repeats: int = 10
    #: Kernel SHAP of each outer fold's winner: rows of its test fold explained (0: none),
    #: background rows from its training part, coalitions per row (cost: their product
    #: in predictions per fold; about 0.1 s per row for an SVM on the real files)
    shap_clients_per_fold: int = 50
    shap_background: int = 20
    shap_nsamples: int = 200
    #: action segments: P(decline) from which a client is "at risk", the profit quantile
    #: that splits high from lower profit, promo share and unpaid-items quantile of the
    #: promo-driven cart segment, and how far (in SD) a feature must stand out to drive an
    #: offer
    p_threshold: float = 0.5
    profit_quantile: float = 0.5
    promo_threshold: float = 0.5
    unpaid_quantile: float = 0.75
    min_smd: float = 0.3
    demo_clients: int = 1300


ONE_CLICK_DEMO_DIR = Path("data/demo_one_click")
#: each second case's stand-in folder, and the real folder with the file that marks it
CASE_DEMO_DIRS = {"one_click": ONE_CLICK_DEMO_DIR, "apparel": APPAREL_DEMO_DIR}
CASE_FOLDERS = {"one_click": (Path("data/one_click"), "market_file.csv"),
                "apparel": (Path("data/apparel"), "apparel-purchases.csv")}


@dataclass(frozen=True)
class Config:
    """Paths, seed, sampler and business settings of one analysis."""

    data_dir: Path = Path("data/demo")
    results_dir: Path = Path("data/results")
    seed: int = 20241123
    demo_clients: int = 104_989
    min_city_clients: int = 30
    #: campaign 1's model gives at most this many cities (most treated clients) a level of
    #: their own, the rest are pooled: the real-scale demo has 36, a 1,000,000-client store
    #: 77, which tripled the model's cells and its sampling time
    max_cities: int = 40
    #: campaign 1's design checks, balance tables and scikit-learn cross-check read every
    #: treated and control client and at most about this many untreated ones (a hash
    #: sample, weighted; the model reads every client as cells): all of them at real scale
    uplift_store_sample: int = 200_000
    #: an Ibis connection URL (``duckdb:///store.duckdb``, ``sqlite:///shop.db``,
    #: ``postgres://user:password@host/db``) whose personal_data, personal_data_coeffs and
    #: purchases tables are used instead of the data folder's (see analysis.store.database);
    #: empty: the folder's files
    database: str = ""
    #: query engine of the data layer (analysis.store): "duckdb" (embedded) or "spark"
    engine: str = "duckdb"
    #: steps run at once (analysis.pipeline): independent steps share the cores, each in a
    #: process of its own, with the same results as one after the other (1)
    jobs: int = 2
    #: MiB the steps running at once may use together (analysis.pipeline.MemoryPlan): a
    #: step starts beside running ones only when their expected peaks (each step's peak
    #: in its last run, at least that of the steps it builds on in this run; an equal
    #: share when neither is known) stay below it; a step alone always runs. 0: no limit.
    #: A 10,000,000-client store's steps peak at 1.6 to 2.8 GiB each, so there they run
    #: one at a time; at 105,000 clients two at once
    memory_budget_mib: int = 3072
    #: keep each MCMC model's compiled code in ``<results_dir>/.compiled`` and load it in
    #: later runs instead of compiling again (analysis.compile_cache, models.compiled):
    #: the same machine code, the same numbers; false compiles in every run
    compile_cache: bool = True
    #: DuckDB's memory limit: a larger store spills to disk instead of growing the process
    engine_memory: str = "1GB"
    #: purchase rows per part of a per-client aggregation (analysis.store.tables.id_ranges):
    #: a larger store is aggregated one client-id range at a time (DuckDB)
    engine_part_rows: int = 8_000_000
    #: draws sized by the checks (``min_draws``): the first check after 250 draws per
    #: chain, more draws of the same chains until r_hat, bulk and tail ESS pass, ``draws``
    #: at most (:meth:`models.sampling.Sampler.sample_until`)
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(min_draws=250))
    #: per-step changes to ``sampler``: tuning, mass matrix and step size measured at real
    #: scale; ``draws`` is each step's ceiling, about three times what its fits needed
    #: before the draws were sized by the checks (campaign 2: 1,500 per chain; the
    #: propensity model: 1,000 after 500 tuning steps with the low-rank mass matrix; the
    #: uplift model on the whole store: 1,000 after 500 tuning steps at target_accept 0.9,
    #: where 0.85 left 1 divergence or r_hat 1.013 on other seeds; the one-click model:
    #: 1,500 per fold; the three BG/NBD fits of the next-purchase step: 500 to 1,100
    #: after 500 tuning steps at target_accept 0.9, in about half the time 0.95 took (7.5
    #: instead of 13 leapfrog steps a draw; the deployed fit's 3,077 cells: 13 to 14 s
    #: instead of 27 s on three seeds of four; the fourth's divergence and short phi ESS
    #: were rerun at 0.95, 27 s in all); at 0.85 the step's own seed left the deployed fit
    #: a divergence (the dropout mean phi sits near 0, its logit in a long tail: two
    #: months say little about dropout);
    #: campaign 2 at target_accept 0.95 from the start: at 0.9 its first run left 10
    #: divergences on the demo store and the 0.95 rerun was the one reported)
    sampler_overrides: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"campaign2": {"draws": 4500, "target_accept": 0.95},
                                 "propensity": {"draws": 3000, "tune": 500, "low_rank": True},
                                 "uplift": {"draws": 3000, "tune": 500, "target_accept": 0.9,
                                            "low_rank": True},
                                 "next_purchase": {"draws": 1800, "tune": 500, "low_rank": True,
                                                   "target_accept": 0.9},
                                 "apparel": {"draws": 2400, "tune": 500, "low_rank": True},
                                 "one_click": {"draws": 4500}})
    business: BusinessConfig = field(default_factory=BusinessConfig)
    gender: GenderConfig = field(default_factory=GenderConfig)
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)
    propensity: PropensityConfig = field(default_factory=PropensityConfig)
    next_purchase: NextPurchaseConfig = field(default_factory=NextPurchaseConfig)
    apparel: ApparelConfig = field(default_factory=ApparelConfig)
    one_click: OneClickConfig = field(default_factory=OneClickConfig)

    def case_dir(self, case: str) -> Path:
        """The data folder of a second case (``one_click`` or ``apparel``): its section's
        ``data_dir``, else the environment variable ``SHOPBAYES_<CASE>_DATA``, else
        ``data/<case>`` when it holds the case's files, else the case's stand-in."""
        configured = getattr(self, case).data_dir
        if configured:
            return Path(configured)
        env = os.environ.get(f"SHOPBAYES_{case.upper()}_DATA")
        if env:
            return Path(env)
        real, marker = CASE_FOLDERS[case]
        return real if (real / marker).exists() else CASE_DEMO_DIRS[case]

    @property
    def one_click_dir(self) -> Path:
        """The one-click case's data folder (see :class:`OneClickConfig`)."""
        return self.case_dir("one_click")

    @property
    def apparel_dir(self) -> Path:
        """The apparel case's data folder (see :class:`ApparelConfig`)."""
        return self.case_dir("apparel")

    def sampler_for(self, step: str) -> SamplerConfig:
        """Sampler settings of one step (``sampler`` with that step's overrides)."""
        return replace(self.sampler, **self.sampler_overrides.get(step, {}))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_dir"] = str(self.data_dir)
        d["results_dir"] = str(self.results_dir)
        return d

    @property
    def uses_demo_data(self) -> bool:
        return self.data_dir.resolve() == Path("data/demo").resolve()


def has_real_data(folder: Path) -> bool:
    """Whether ``folder`` holds a store: its database, its client CSV or its client table
    as Parquet."""
    return any((folder / f).exists() for f in (DB_FILE, CLIENTS_CSV, "personal_data.parquet"))


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read ``shopbayes.toml`` (or ``path``) over the defaults, then apply ``overrides``.

    The data folder is, in order: ``overrides['data_dir']``, the ``SHOPBAYES_DATA``
    environment variable, ``data_dir`` in the file, ``data/raw`` when it holds the
    store's files, else ``data/demo`` (the synthetic default). The steps run at once
    (``jobs``) likewise: the override, ``SHOPBAYES_JOBS``, the file, 2.

    Raises
    ------
    FileNotFoundError
        ``path`` given and absent.
    ValueError
        An unknown setting, an unknown engine, or ``jobs`` not a whole number >= 1.
    """
    cfg = Config()
    file = Path(path) if path else Path(CONFIG_FILE)
    raw: dict[str, Any] = {}
    if file.exists():
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    elif path:
        raise FileNotFoundError(f"config file not found: {file}")
    known = {f.name for f in fields(Config)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"{file}: unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    sampler = replace(cfg.sampler, **raw.pop("sampler", {}))
    business = replace(cfg.business, **raw.pop("business", {}))
    seg_raw = raw.pop("segments", {})
    seg_raw = {k: tuple(v) if isinstance(v, list) else v for k, v in seg_raw.items()}
    segments = replace(cfg.segments, **seg_raw)
    propensity = replace(cfg.propensity, **raw.pop("propensity", {}))
    gender = replace(cfg.gender, **raw.pop("gender", {}))
    one_click = replace(cfg.one_click, **raw.pop("one_click", {}))
    next_purchase = replace(cfg.next_purchase, **raw.pop("next_purchase", {}))
    apparel = replace(cfg.apparel, **raw.pop("apparel", {}))
    if "data_dir" not in raw and "data_dir" not in overrides:
        env = os.environ.get("SHOPBAYES_DATA")
        if env:
            raw["data_dir"] = env
        elif has_real_data(Path("data/raw")):
            raw["data_dir"] = "data/raw"
    if os.environ.get("SHOPBAYES_JOBS"):  # over the file, under an explicit override
        try:
            raw["jobs"] = int(os.environ["SHOPBAYES_JOBS"])
        except ValueError:
            raise ValueError(f"SHOPBAYES_JOBS={os.environ['SHOPBAYES_JOBS']!r} is not a "
                             "whole number") from None
    values = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    for key in ("data_dir", "results_dir"):
        if key in values:
            values[key] = Path(values[key])
    if not isinstance(values.get("jobs", 1), int) or values.get("jobs", 1) < 1:
        raise ValueError(f"{file}: jobs = {values['jobs']!r} must be a whole number >= 1")
    if values.get("engine", cfg.engine) not in ENGINES:
        raise ValueError(f"{file}: engine = {values['engine']!r} is not one of "
                         f"{', '.join(ENGINES)}")
    return replace(cfg, sampler=sampler, business=business, gender=gender, segments=segments,
                   propensity=propensity, one_click=one_click, next_purchase=next_purchase,
                   apparel=apparel, **values)
