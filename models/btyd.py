"""Buy-till-you-die models: who is still a client, who buys again soon, what they spend.

Purchase process (**BG/NBD**, Fader, Hardie and Lee 2005, "Counting your customers the easy
way", Marketing Science 24(2)): while alive a client buys at rate ``lambda ~ Gamma(r,
alpha)`` (a Poisson process in days); after each purchase they drop out with probability ``p
~ Beta(a, b)``. Its likelihood depends on a client's history only through ``(frequency,
recency, T)``: repeat purchase days, days from the first to the last purchase day, days from
the first purchase day to the end of the calibration period. Clients with the same triple
(and group) are therefore one **cell** with a count ``n``, and the log-likelihood of a cell
is ``n`` times that of one client: :class:`BetaGeoCells` fits the cells, not client rows (at
real scale 4,073 cells for 69,930 training clients in the textbook form; 444 with every
client born at day 0, where T is the same for all). The per-client density is
pymc-marketing's ``BetaGeoNBD`` distribution, and the predictions (P(alive), expected purchases,
P(no purchase) in a horizon) are pymc-marketing's ``BetaGeoModel`` methods evaluated with
this fit's posterior, so the formulas are the library's.

Partial pooling: with ``group`` (e.g. the client's city) each group has its own ``alpha``
and ``r`` on the log scale and dropout mean ``phi = a / (a + b)`` on the logit scale (the
concentration ``kappa = a + b`` is shared), drawn around a store-wide value
(``ZeroSumNormal`` deviations of a fixed spread): a small group borrows from the others, a
large one speaks for itself.

Spend (**Gamma-Gamma**, Fader, Hardie and Lee 2005, "RFM and CLV: using iso-value curves
for customer base analysis", JMR 42(4); Fader and Hardie 2013, "The Gamma-Gamma model of
monetary value"): pymc-marketing's ``GammaGammaModel`` on clients with at least one repeat
purchase day (``frequency``, mean spend per repeat purchase day). Its marginal likelihood
depends on each client's mean spend, a continuous value, so it has no exact cells; it is
fitted on a sample of clients (three parameters; the next-purchase step draws a hash
sample of about ``spend_fit_clients`` in the engine).

Priors (stated; :meth:`BetaGeoCells.prior_predictive` simulates purchase histories from
them): ``alpha ~ Weibull(2, 10)``, ``r ~ Weibull(2, 1)``, ``phi = a / (a + b) ~ Uniform(0,
1)`` (pymc-marketing's defaults) and ``kappa = a + b ~ LogNormal(2, 1.5)`` (median 7.4,
truncated at :data:`KAPPA_MAX`; the library's ``Pareto(1, 1)`` has so heavy a tail that a
store without visible dropout left ``b`` with a posterior SD of 2 million and slow
sampling). A group's deviations from the store's value ``~ ZeroSumNormal(1.0)`` on the log /
logit scale; the spread is fixed, not learned: with a handful of groups a learned one is
barely identified (four learned spreads over three groups gave divergences and 420 s).
Gamma-Gamma (library default ``HalfFlat``): ``p ~ Gamma(2, 0.5)``, ``q ~ Gamma(5, 1)`` (q >
1 for a finite mean), ``v ~ Exponential`` with the fitted clients' mean spend as its mean
(money has no natural scale: scaled to the data, as rstanarm's autoscaling does), checked by
:meth:`SpendModel.prior_predictive`."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from models.diagnostics import Convergence, check_convergence
from models.sampling import Sampler, SamplerSettings, sample_checked
from models.uplift import HDI_PROB

CELL_KEYS = ["frequency", "recency", "T"]
BG_PARAMETERS = ["alpha", "r", "a", "b"]
GG_PARAMETERS = ["p", "q", "v"]

DEFAULT_PRIORS: dict[str, tuple[Any, ...]] = {
    "alpha": ("Weibull", 2.0, 10.0),
    "r": ("Weibull", 2.0, 1.0),
    "phi": ("Uniform", 0.0, 1.0),
    "kappa": ("LogNormal", 2.0, 1.5),
    "sigma_group": ("Fixed", 1.0),
}

SPEND_PRIORS: dict[str, tuple[Any, ...]] = {
    "p": ("Gamma", 2.0, 0.5),
    "q": ("Gamma", 5.0, 1.0),
    # rate 1 / (the fitted clients' mean spend): money has no natural scale, so the prior
    # is scaled to the data as rstanarm's autoscaling does; with the prior means of p (4)
    # and q (5) the prior's population mean spend p v / (q - 1) is then the observed one
    # (twice that pulled v, and q with it, up: q = 3 fell outside its 94% HDI)
    "v": ("Gamma", 1.0, "1 / mean spend"),
}


def rfm_cells(rfm: pd.DataFrame, group: str | None = None) -> pd.DataFrame:
    """Clients with the same ``(group, frequency, recency, T)`` as one cell with count ``n``.

    Parameters
    ----------
    rfm : DataFrame
        One row per client with integer ``frequency`` (repeat purchase days), ``recency``
        and ``T`` (days), and ``group`` when given; or already cells with ``n``.
    group : str, optional
        Column of the pooling groups (e.g. ``"cluster"``).

    Returns
    -------
    DataFrame with ``group`` (``"all"`` without one), ``frequency``, ``recency``, ``T``,
    ``n``; sorted.

    Raises
    ------
    ValueError
        When a row is impossible (recency > T, negative values, frequency 0 with recency > 0).
    """
    df = rfm.copy()
    df["group"] = df[group].astype(str) if group else "all"
    if "n" not in df:
        df["n"] = 1
    check_rfm(df)
    out = df.groupby(["group", *CELL_KEYS], observed=True)["n"].sum().reset_index()
    return out.sort_values(["group", *CELL_KEYS]).reset_index(drop=True)


@dataclass(frozen=True)
class ActivityClock:
    """Operational time: days weighted by the store's activity on them.

    BG/NBD assumes that a client's purchase rate does not change with the calendar; a
    store whose buying declines over the weeks (the published store's purchase days have
    quartiles 10 / 22 / 40 of 0..58, front-loaded) breaks that and the model then
    over-predicts the next weeks. A purchase process whose rate is ``lambda * g(t)`` for
    every client, with a common calendar factor ``g``, is the stationary process in the
    clock ``tau(t) = integral of g`` (a time change of a Poisson process), so the model
    is fitted on ``recency`` and ``T`` measured in that clock. ``g`` is the number of
    clients buying on each day, relative to its mean over the observed days; the horizon
    ahead is measured at the mean activity of the last ``forecast_days`` observed days
    (the assumption that buying stays at its recent level).

    Parameters
    ----------
    weights : array (days,)
        Relative activity of days ``0 .. len(weights) - 1`` (mean 1; all ones: calendar
        days).
    forecast_days : int
        Observed days whose mean activity measures the days ahead.
    """

    weights: np.ndarray
    forecast_days: int = 14

    @classmethod
    def from_buyers(cls, buyers: np.ndarray, forecast_days: int = 14) -> ActivityClock:
        """The clock of clients buying per day (days ``0..len-1``; a day without any
        buyer takes no time)."""
        b = np.asarray(buyers, float)
        if b.ndim != 1 or len(b) == 0 or not np.isfinite(b).all() or (b < 0).any() \
                or b.sum() <= 0:
            raise ValueError("buyers per day must be a non-empty, non-negative series with "
                             "at least one buyer")
        return cls(b / b.mean(), forecast_days)

    @classmethod
    def calendar(cls, days: int) -> ActivityClock:
        """Calendar days (every day weighs 1): the plain BG/NBD."""
        return cls(np.ones(int(days)))

    def at(self, day: np.ndarray) -> np.ndarray:
        """Operational time at the start of each ``day`` (integer days)."""
        cum = np.concatenate([[0.0], np.cumsum(self.weights)])
        return cum[np.asarray(day, int)]

    @property
    def end(self) -> float:
        """Operational time at the end of the last observed day."""
        return float(self.weights.sum())

    def horizon(self, days: float) -> float:
        """Operational length of the next ``days`` days."""
        return float(days) * float(self.weights[-self.forecast_days:].mean())

    def transform(self, clients: pd.DataFrame, window_birth: bool = True) -> pd.DataFrame:
        """``clients`` with ``frequency``, ``recency`` and ``T`` in this clock, from their
        integer ``first_day``, ``last_day`` and ``frequency`` (repeat purchase days).

        ``window_birth``: time starts at the start of the observed days for every client
        (an established store's clients were there before the window), every purchase day
        counts (``frequency`` = purchase days) and a purchase is at the middle of its day;
        the fit is then zero-truncated (:class:`BetaGeoCells` ``truncated``). Otherwise
        the textbook BG/NBD: time starts at the first purchase, which is not counted.
        """
        out = clients.copy()
        last = out["last_day"].to_numpy()
        if window_birth:
            out["frequency"] = out["frequency"].to_numpy() + 1
            out["recency"] = self.at(last) + 0.5 * self.weights[last]
            out["T"] = self.end
            return out
        first = self.at(out["first_day"].to_numpy())
        out["recency"] = self.at(last) - first
        out["T"] = self.end - first
        return out


def client_cells(clients: pd.DataFrame, group: str | None = None
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct ``(group, frequency, recency, T)`` cells of ``clients`` (``group``
    ``"all"`` without a group column) and each client's position among them: predict per
    cell (cells x draws, never clients x draws), then index the cells' results by the
    positions.

    Returns
    -------
    (cells, positions)
        ``cells`` with ``group`` and :data:`CELL_KEYS`; ``positions`` (clients,) int.
    """
    keys = _cell_keys(clients, group)
    cells = keys.drop_duplicates().reset_index(drop=True)
    return cells, cell_positions(clients, cells, group)


def cell_positions(clients: pd.DataFrame, cells: pd.DataFrame, group: str | None = None
                   ) -> np.ndarray:
    """Each client's row in ``cells`` (``group`` and :data:`CELL_KEYS`, e.g. the cells of
    every client, of which ``clients`` is a batch): an int array (clients,).

    Raises
    ------
    ValueError
        When a client's cell is not among ``cells``.
    """
    pos = _cell_keys(clients, group).merge(cells[["group", *CELL_KEYS]].reset_index(),
                                           on=["group", *CELL_KEYS], how="left")["index"]
    if pos.isna().any():
        raise ValueError(f"{int(pos.isna().sum())} clients have a cell that is not among "
                         "the cells given")
    return pos.to_numpy(int)


def _cell_keys(clients: pd.DataFrame, group: str | None) -> pd.DataFrame:
    g = clients[group].astype(str).to_numpy() if group else np.full(len(clients), "all")
    return pd.DataFrame({"group": g, **{c: clients[c].to_numpy() for c in CELL_KEYS}})


def thin(ds: xr.Dataset, draws: int | None) -> xr.Dataset:
    """``ds`` (dims chain, draw) with every k-th draw kept, about ``draws`` in all (all of
    them when ``draws`` is ``None``)."""
    if not draws:
        return ds
    step = max(1, int(ds.sizes["chain"] * ds.sizes["draw"] // draws))
    return ds.isel(draw=slice(None, None, step))


def check_rfm(df: pd.DataFrame) -> None:
    """Raise ``ValueError`` naming the rows when a ``(frequency, recency, T)`` row is not a
    possible purchase history."""
    f, r, t = (df[c].to_numpy(float) for c in CELL_KEYS)
    bad = (f < 0) | (r < 0) | (r > t + 1e-9) | ((f == 0) & (r > 0)) | ~np.isfinite(f + r + t)
    if bad.any():
        rows = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"{int(bad.sum())} impossible (frequency, recency, T) rows, first at "
                         f"positions {rows}: need 0 <= recency <= T and recency 0 when "
                         "frequency is 0")


def _prior(pm: Any, name: str, spec: tuple[Any, ...], **kw: Any) -> Any:
    kind, *args = spec
    if kind == "Weibull":
        return pm.Weibull(name, alpha=args[0], beta=args[1], **kw)
    if kind == "Uniform":
        return pm.Uniform(name, lower=args[0], upper=args[1], **kw)
    if kind == "Pareto":
        return pm.Pareto(name, alpha=args[0], m=args[1], **kw)
    if kind == "Gamma":
        return pm.Gamma(name, alpha=args[0], beta=args[1], **kw)
    if kind == "LogNormal":
        return pm.LogNormal(name, mu=args[0], sigma=args[1], **kw)
    if kind == "HalfNormal":
        return pm.HalfNormal(name, sigma=args[0], **kw)
    raise ValueError(f"unknown prior {kind} for {name}")


#: upper bound of ``kappa = a + b``: beyond it pymc-marketing's BG/NBD log-density loses
#: its precision (a chain on the apparel stand-in ran off to kappa = 1e85, where the
#: density's beta functions cancel into nonsense); the store's posterior is near 1e3
KAPPA_MAX = 1e5


def _kappa(pm: Any, spec: tuple[Any, ...]) -> Any:
    """``kappa_all``: the prior ``spec`` (LogNormal) truncated at :data:`KAPPA_MAX`."""
    if spec[0] != "LogNormal":
        return _prior(pm, "kappa_all", spec)
    log_k = pm.TruncatedNormal("log_kappa_all", mu=spec[1], sigma=spec[2],
                               upper=float(np.log(KAPPA_MAX)))
    return pm.Deterministic("kappa_all", pm.math.exp(log_k))


def _library_model(posterior: xr.Dataset, cells: pd.DataFrame) -> Any:
    """pymc-marketing's ``BetaGeoModel`` on ``cells`` holding ``posterior`` (``alpha, r,
    a, b`` with dims chain, draw) as its fit, for its predictive methods."""
    from pymc_marketing.clv import BetaGeoModel

    data = cells_as_customers(cells)
    bg = BetaGeoModel(data=data)
    bg.build_model()
    bg.idata = az.InferenceData(posterior=posterior[BG_PARAMETERS])
    return bg


def cells_as_customers(cells: pd.DataFrame) -> pd.DataFrame:
    """The library's data frame: one "customer" per cell (``customer_id`` its position)."""
    return pd.DataFrame({"customer_id": np.arange(len(cells)),
                         **{c: cells[c].to_numpy(float) for c in CELL_KEYS}})


@dataclass
class BetaGeoCells:
    """BG/NBD fitted on (group, frequency, recency, T) cells, optionally pooled by group.

    Parameters
    ----------
    pooled : bool
        One parameter set per group with partial pooling (``True``) or one for all
        (``False``; the cells' groups are ignored).
    priors : dict, optional
        Overrides of :data:`DEFAULT_PRIORS`.
    sampler : SamplerSettings, optional
        MCMC settings (nutpie when installed).
    truncated : bool
        The cells are the clients with at least one purchase in ``(0, T]`` counted from
        the window's start (:meth:`ActivityClock.transform` with ``window_birth``): the
        likelihood is divided by ``P(X(T) >= 1) = 1 - (alpha / (alpha + T))^r`` (a client
        alive at the start stays so until a purchase).
    groups : list of str, optional
        The model's groups (default: the cells' groups when ``pooled``, else one group
        ``all``). A fit with ``pooled=False`` and several groups has the pooled model's
        structure with the groups' spread set to 0 (every group has the store's
        parameters: the one-for-all model exactly), so that it and the pooled fit, and
        later fits on other cells, share one compiled model (``fit(..., reuse=...)``).

    Examples
    --------
    >>> cells = rfm_cells(rfm, group="cluster")  # doctest: +SKIP
    >>> m = BetaGeoCells(pooled=True).fit(cells, seed=1)  # doctest: +SKIP
    >>> m.predict(cells, horizon=20)  # doctest: +SKIP

    One compiled model for the one-for-all fit, the pooled fit and a refit on new cells
    (nutpie compiles each PyMC model for about 10 s; sampling these cells takes less):

    >>> groups = sorted(cells["group"].unique())  # doctest: +SKIP
    >>> one = BetaGeoCells(groups=groups).fit(cells)  # doctest: +SKIP
    >>> pooled = BetaGeoCells(pooled=True, groups=groups).fit(cells, reuse=one)  # doctest: +SKIP
    """

    pooled: bool = False
    priors: dict[str, tuple[Any, ...]] | None = None
    sampler: SamplerSettings | None = None
    truncated: bool = False
    groups: list[str] | None = None

    def __post_init__(self) -> None:
        self.priors_ = {**DEFAULT_PRIORS, **(self.priors or {})}
        self.idata: az.InferenceData | None = None
        self.convergence: Convergence | None = None
        self.resampled_with: dict[str, Any] | None = None
        self.groups_: list[str] = [str(g) for g in self.groups] if self.groups else ["all"]
        self.cells_: int = 0  # cells of the fitted data
        self.sampler_: Sampler | None = None  # the compiled model (shared by ``reuse``)
        #: wall seconds of the fit: ``compile`` (0 when it reused a compiled model) and
        #: ``sample`` (every run, a rerun included)
        self.timings_: dict[str, float] = {}

    # ------------------------------------------------------------------ model
    def _group_index(self, cells: pd.DataFrame) -> np.ndarray:
        if not self.pooled or "group" not in cells:
            # one for all: every cell reads the first group (the store's parameters)
            return np.zeros(len(cells), dtype=int)
        index = {g: i for i, g in enumerate(self.groups_)}
        missing = sorted(set(cells["group"].astype(str)) - set(index))
        if missing:
            raise ValueError(f"groups {missing} were not in the fitted cells {self.groups_}")
        return cells["group"].astype(str).map(index).to_numpy()

    def _set_groups(self, cells: pd.DataFrame) -> None:
        """A pooled model without given ``groups`` takes the cells' groups."""
        if self.pooled and self.groups is None:
            self.groups_ = sorted(cells["group"].astype(str).unique().tolist())

    def _spread(self) -> float:
        """The groups' deviations' scale: the prior's when pooled, else 0."""
        return float(self.priors_["sigma_group"][1]) if self.pooled else 0.0

    def _structure(self) -> tuple[Any, ...]:
        """What the compiled model depends on (not the cells, not the spread)."""
        return (tuple(self.groups_), self.truncated,
                tuple(sorted((k, tuple(v)) for k, v in self.priors_.items())))

    def _data(self, cells: pd.DataFrame) -> dict[str, np.ndarray]:
        """The values of the model's ``pm.Data`` containers for ``cells``."""
        data = {"T": cells["T"].to_numpy(float),
                "obs": np.stack([cells["recency"].to_numpy(float),
                                 cells["frequency"].to_numpy(float)], axis=1),
                "n": cells["n"].to_numpy(float),
                "group_index": self._group_index(cells).astype(np.int64)}
        if len(self.groups_) > 1:  # one group has no deviations
            data["group_spread"] = np.asarray(self._spread())
        return data

    def build_model(self, cells: pd.DataFrame) -> Any:
        """The PyMC model: group parameters and the cells' count-weighted BG/NBD
        log-likelihood (pymc-marketing's ``BetaGeoNBD`` density, a ``Potential``)."""
        import pymc as pm
        from pymc_marketing.clv.distributions import BetaGeoNBD

        check_rfm(cells)
        self._set_groups(cells)
        data = self._data(cells)
        pri = self.priors_
        coords = {"group": self.groups_}
        with pm.Model(coords=coords) as model:
            alpha0 = _prior(pm, "alpha_all", pri["alpha"])
            r0 = _prior(pm, "r_all", pri["r"])
            phi0 = _prior(pm, "phi_all", pri["phi"])
            kappa0 = _kappa(pm, pri["kappa"])
            if len(self.groups_) > 1:
                # a fixed spread (data: the prior's when pooled, 0 for one for all, so both
                # fits share one compiled model): with a handful of groups a learned one is
                # barely identified (4 learned spreads over 3 groups gave divergences and
                # 420 s). kappa (the dropout's concentration) is shared: a group's own could
                # leave the bound where the density stays precise, and a pooled model whose
                # groups' kappa did hung the sampler
                spread = pm.Data("group_spread", data["group_spread"])
                dev = {name: spread * pm.ZeroSumNormal(f"{name}_z", sigma=1.0, dims="group")
                       for name in ("alpha", "r", "phi")}
                alpha = pm.Deterministic("alpha", alpha0 * pm.math.exp(dev["alpha"]), dims="group")
                r = pm.Deterministic("r", r0 * pm.math.exp(dev["r"]), dims="group")
                phi = pm.Deterministic("phi", pm.math.invlogit(pm.math.logit(phi0) + dev["phi"]),
                                       dims="group")
            else:
                alpha = pm.Deterministic("alpha", alpha0[None], dims="group")
                r = pm.Deterministic("r", r0[None], dims="group")
                phi = pm.Deterministic("phi", phi0[None], dims="group")
            kappa = pm.Deterministic("kappa", pm.math.stack([kappa0] * len(self.groups_)),
                                     dims="group")
            a = pm.Deterministic("a", phi * kappa, dims="group")
            b = pm.Deterministic("b", (1 - phi) * kappa, dims="group")
            T = pm.Data("T", data["T"])
            obs = pm.Data("obs", data["obs"])
            n = pm.Data("n", data["n"])
            idx = pm.Data("group_index", data["group_index"])
            dist = BetaGeoNBD.dist(a=a[idx], b=b[idx], r=r[idx], alpha=alpha[idx], T=T)
            loglik = pm.logp(dist, obs)
            if self.truncated:
                # only clients who bought in the window are observed: divide by
                # P(at least one purchase in (0, T]) = 1 - (alpha / (alpha + T))^r
                p0 = r[idx] * (pm.math.log(alpha[idx]) - pm.math.log(alpha[idx] + T))
                loglik = loglik - pm.math.log1mexp(p0)
            pm.Potential("loglik", (n * loglik).sum())
        return model

    def _free(self) -> list[str]:
        names = ["alpha_all", "r_all", "phi_all", "kappa_all"]
        if self.pooled and len(self.groups_) > 1:
            names += ["alpha", "r", "a", "b"]
        return names

    def fit(self, cells: pd.DataFrame, seed: int = 0, retry_draws: int = 1500,
            reuse: BetaGeoCells | None = None) -> BetaGeoCells:
        """Sample the posterior (nutpie or PyMC NUTS), check convergence and, when a check
        fails, sample once more with more draws (:func:`models.sampling.sample_checked`).

        Parameters
        ----------
        cells : DataFrame
            :func:`rfm_cells` output.
        seed : int
            Random seed: same seed, same draws.
        reuse : BetaGeoCells, optional
            A fitted model whose compiled model this fit samples with its own cells and
            spread (nutpie's ``with_data``), when both have the same groups, priors and
            truncation; otherwise this fit compiles its own.
        """
        check_rfm(cells)
        self.cells_ = len(cells)
        self._set_groups(cells)
        shared = (reuse is not None and reuse.sampler_ is not None
                  and reuse._structure() == self._structure())
        if shared:
            sampler = reuse.sampler_
            sampler.settings = self.sampler or reuse.sampler_.settings
        else:
            sampler = Sampler(self.build_model(cells),
                              self.sampler or SamplerSettings(draws=1000, tune=500, low_rank=True))
        self.sampler_ = sampler
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Potential.*")
            self.idata, self.convergence, self.resampled_with = sample_checked(
                sampler, seed, lambda i: check_convergence(i, var_names=self._free()),
                retry_draws, data=self._data(cells))
        self.timings_ = {"compile": 0.0 if shared else round(sampler.compile_seconds, 2),
                         "sample": round(time.perf_counter() - t0, 2)}
        return self

    def _require_fit(self) -> az.InferenceData:
        if self.idata is None:
            raise RuntimeError("fit the model first")
        return self.idata

    # ------------------------------------------------------------------ predictions
    def group_posterior(self, group: str, draws: int | None = None) -> xr.Dataset:
        """``alpha, r, a, b`` draws of one group (dims chain, draw), thinned to about
        ``draws`` in all when given."""
        post = self._require_fit().posterior
        # one for all: every group holds the store's parameters, the first stands for all
        g = group if self.pooled else self.groups_[0]
        if g not in self.groups_:
            raise ValueError(f"group {group!r} was not fitted; groups are {self.groups_}")
        return thin(post[BG_PARAMETERS].sel(group=g), draws).drop_vars("group")

    def predict_draws(self, cells: pd.DataFrame, horizon: float, draws: int | None = None
                      ) -> dict[str, np.ndarray]:
        """Posterior draws per cell: P(alive), expected purchases in the next ``horizon``
        days, P(at least one purchase) in them.

        Returns
        -------
        dict of arrays (cells x draws) ``p_alive``, ``expected_purchases``, ``p_purchase``,
        in the order of ``cells``.
        """
        check_rfm(cells)
        groups = cells["group"].astype(str) if self.pooled else pd.Series("all", cells.index)
        out: dict[str, np.ndarray] = {}
        for g in groups.unique():
            sel = np.flatnonzero((groups == g).to_numpy())
            sub = cells.iloc[sel]
            bg = _library_model(self.group_posterior(g, draws), sub)
            data = cells_as_customers(sub)
            res = {"p_alive": bg.expected_probability_alive(data),
                   "expected_purchases": bg.expected_purchases(data, future_t=horizon),
                   "p_purchase": 1 - bg.expected_probability_no_purchase(data=data, t=horizon)}
            res = {k: v.stack(sample=("chain", "draw")).transpose("customer_id", "sample").values
                   for k, v in res.items()}
            zero = sub["frequency"].to_numpy() == 0
            if zero.any():
                _no_repeat(res, self.group_posterior(g, draws), sub["T"].to_numpy()[zero],
                           horizon, zero)
            for k, arr in res.items():
                if k not in out:
                    out[k] = np.empty((len(cells), arr.shape[1]))
                out[k][sel] = arr
        return out

    def predict(self, cells: pd.DataFrame, horizon: float, draws: int | None = 500
                ) -> pd.DataFrame:
        """Posterior mean and 94% HDI per cell of :meth:`predict_draws`' quantities
        (columns ``<quantity>``, ``<quantity>_low``, ``<quantity>_high``)."""
        d = self.predict_draws(cells, horizon, draws)
        out = cells.reset_index(drop=True).copy()
        for k, v in d.items():
            out[k] = v.mean(axis=1)
            lo, hi = hdi_rows(v)
            out[f"{k}_low"], out[f"{k}_high"] = lo, hi
        return out

    def summary(self) -> pd.DataFrame:
        """ArviZ summary (mean, 94% HDI, ESS, r_hat) of the purchase-process parameters
        (per group when pooled; once, group ``all``, otherwise)."""
        post = self._require_fit().posterior[BG_PARAMETERS]
        if not self.pooled:
            post = post.isel(group=[0]).assign_coords(group=["all"])
        return az.summary(post, hdi_prob=HDI_PROB)

    def group_table(self) -> pd.DataFrame:
        """Per group: mean purchase days per day while alive (``r / alpha``) and the
        dropout probability after a purchase (``a / (a + b)``), mean and 94% HDI."""
        post = self._require_fit().posterior
        rate = (post["r"] / post["alpha"]).stack(s=("chain", "draw"))
        drop = (post["a"] / (post["a"] + post["b"])).stack(s=("chain", "draw"))
        rows = []
        # one for all: every group holds the store's parameters, shown once as "all"
        for g in self.groups_ if self.pooled else self.groups_[:1]:
            row: dict[str, Any] = {"group": g if self.pooled else "all"}
            for name, x in (("purchase_rate", rate), ("dropout", drop)):
                v = x.sel(group=g).values
                lo, hi = az.hdi(v, hdi_prob=HDI_PROB)
                row.update({name: float(v.mean()), f"{name}_low": float(lo),
                            f"{name}_high": float(hi)})
            rows.append(row)
        return pd.DataFrame(rows)

    def prior_predictive(self, T: float, clients: int = 2000, seed: int = 0
                         ) -> dict[str, float]:
        """Simulate ``clients`` purchase histories of ``T`` days from the priors (one
        parameter draw per client: the prior's spread of stores) and summarise their
        repeat purchase days: the share with none and the 50/90/99% quantiles."""
        import pymc as pm
        from pymc_marketing.clv.distributions import BetaGeoNBD

        pri = self.priors_
        with pm.Model():
            alpha = _prior(pm, "alpha", pri["alpha"], shape=clients)
            r = _prior(pm, "r", pri["r"], shape=clients)
            phi = _prior(pm, "phi", pri["phi"], shape=clients)
            kappa = _prior(pm, "kappa", pri["kappa"], shape=clients)
            x = BetaGeoNBD("x", a=phi * kappa, b=(1 - phi) * kappa, r=r, alpha=alpha,
                           T=np.full(clients, float(T)))
            sim = pm.draw(x, random_seed=seed)
        freq = sim[:, 1]
        return {"days": float(T), "share_no_repeat": float((freq == 0).mean()),
                "frequency_q50": float(np.quantile(freq, 0.5)),
                "frequency_q90": float(np.quantile(freq, 0.9)),
                "frequency_q99": float(np.quantile(freq, 0.99)),
                "share_above_T": float((freq > T).mean())}

    def plot(self, ax: Any = None) -> Any:
        """Forest plot of the groups' purchase rate and dropout probability (94% HDI)."""
        import matplotlib.pyplot as plt

        t = self.group_table()
        if ax is None:
            _, ax = plt.subplots(1, 2, figsize=(8, 0.5 + 0.45 * len(t)), sharey=True)
        y = np.arange(len(t))
        for a, name, label in ((ax[0], "purchase_rate", "purchase days per day while alive"),
                               (ax[1], "dropout", "P(drop out after a purchase)")):
            a.errorbar(t[name], y, xerr=[t[name] - t[f"{name}_low"],
                                         t[f"{name}_high"] - t[name]], fmt="o")
            a.set_xlabel(label)
        ax[0].set_yticks(y, t["group"])
        return ax


def _no_repeat(res: dict[str, np.ndarray], post: xr.Dataset, T: np.ndarray, horizon: float,
               rows: np.ndarray) -> None:
    """Overwrite ``res``'s ``rows`` (clients without a repeat purchase) with the BG/NBD
    closed forms for ``x = 0`` (Fader, Hardie and Lee 2005, eq. 10 and sec. 3 with the
    ``delta_{x>0}`` terms 0): alive for sure (dropout follows a purchase), P(no purchase
    in ``t``) = ``((alpha + T) / (alpha + T + t))^r``. pymc-marketing 0.19 applies the
    ``a / (b + x - 1)`` term at ``x = 0`` too, which gives NaN at ``b = 1`` and wrong
    values below it (the apparel stand-in's ``b`` is 0.9: mean P(buy) 1.9% for 8.1%)."""
    from scipy.special import hyp2f1

    a, b, alpha, r = (post[k].values.reshape(1, -1) for k in ("a", "b", "alpha", "r"))
    big_t = np.asarray(T, float)[:, None] + alpha
    ratio = big_t / (big_t + horizon)
    res["p_alive"][rows] = 1.0
    res["p_purchase"][rows] = 1.0 - ratio ** r
    z = horizon / (big_t + horizon)
    res["expected_purchases"][rows] = ((a + b - 1) / (a - 1)
                                       * (1.0 - ratio ** r * hyp2f1(r, b, a + b - 1, z)))


def hdi_rows(draws: np.ndarray, prob: float = HDI_PROB) -> tuple[np.ndarray, np.ndarray]:
    """94% HDI of each row of ``draws`` (rows x draws), as two arrays (ArviZ's ``hdi``
    with the rows as its variable's shape)."""
    if draws.shape[1] == 0:
        nan = np.full(draws.shape[0], np.nan)
        return nan, nan
    h = az.hdi(np.asarray(draws, float).T[None, :, :], hdi_prob=prob)
    return h[:, 0], h[:, 1]


# --------------------------------------------------------------------------- spend
@dataclass
class SpendModel:
    """Gamma-Gamma model of spend per purchase day (pymc-marketing ``GammaGammaModel``).

    Parameters
    ----------
    priors : dict, optional
        Overrides of :data:`SPEND_PRIORS`.
    sampler : SamplerSettings, optional
        MCMC settings.
    """

    priors: dict[str, tuple[Any, ...]] | None = None
    sampler: SamplerSettings | None = None

    def __post_init__(self) -> None:
        self.priors_ = {**SPEND_PRIORS, **(self.priors or {})}
        self.model_: Any = None
        self.convergence: Convergence | None = None
        self.resampled_with: dict[str, Any] | None = None
        #: wall seconds of the fit: ``compile`` and ``sample`` (every run)
        self.timings_: dict[str, float] = {}

    def _library(self, data: pd.DataFrame) -> Any:
        from pymc_extras.prior import Prior
        from pymc_marketing.clv import GammaGammaModel

        cfg = {k: Prior(v[0], alpha=v[1], beta=self._rate(v[2], data))
               for k, v in self.priors_.items()}
        return GammaGammaModel(data=data, model_config=cfg)

    @staticmethod
    def _rate(rate: Any, data: pd.DataFrame) -> float:
        """A prior's rate: a number, or ``"1 / mean spend"`` of ``data``."""
        if isinstance(rate, str):
            return 1.0 / float(data["monetary_value"].mean())
        return float(rate)

    def fit(self, clients: pd.DataFrame, seed: int = 0, retry_draws: int = 1500) -> SpendModel:
        """Fit on clients with ``frequency`` > 0 and ``mean_spend`` > 0 (money per repeat
        purchase day).

        Raises
        ------
        ValueError
            When no client has a repeat purchase day, or a mean spend is not positive.
        """
        data = self._data(clients)
        if data.empty:
            raise ValueError("no client with a repeat purchase day: the spend model needs some")
        self.model_ = self._library(data)
        self.model_.build_model()
        sampler = Sampler(self.model_.model, self.sampler or SamplerSettings(draws=1000,
                                                                             tune=1000))
        t0 = time.perf_counter()
        idata, self.convergence, self.resampled_with = sample_checked(
            sampler, seed, lambda i: check_convergence(i, var_names=GG_PARAMETERS), retry_draws)
        self.timings_ = {"compile": round(sampler.compile_seconds, 2),
                         "sample": round(time.perf_counter() - t0, 2)}
        self.model_.idata = az.InferenceData(posterior=idata.posterior[GG_PARAMETERS],
                                             sample_stats=idata.sample_stats)
        return self

    @staticmethod
    def _data(clients: pd.DataFrame) -> pd.DataFrame:
        c = clients[clients["frequency"] > 0]
        if (c["mean_spend"] <= 0).any() or c["mean_spend"].isna().any():
            bad = np.flatnonzero(~(c["mean_spend"].to_numpy(float) > 0))[:5].tolist()
            raise ValueError(f"mean_spend must be positive for clients with a repeat "
                             f"purchase day; not at rows {bad}")
        return pd.DataFrame({"customer_id": np.arange(len(c)),
                             "frequency": c["frequency"].to_numpy(float),
                             "monetary_value": c["mean_spend"].to_numpy(float)})

    def posterior(self, draws: int | None = None) -> xr.Dataset:
        """``p, q, v`` draws (chain, draw), thinned to about ``draws``."""
        if self.model_ is None:
            raise RuntimeError("fit the model first")
        return thin(self.model_.idata.posterior[GG_PARAMETERS], draws)

    def expected_spend_draws(self, frequency: np.ndarray, mean_spend: np.ndarray,
                             draws: int = 500) -> np.ndarray:
        """Expected spend per future purchase day of each client (clients x draws, money):
        the Gamma-Gamma conditional mean (Fader and Hardie 2013, "The Gamma-Gamma model of
        monetary value", eq. 5; pymc-marketing's ``GammaGammaModel.
        expected_customer_spend``)::

            w = p x / (p x + q - 1)
            spend = (1 - w) pop + w m,   pop = p v / (q - 1)

        which is the population mean ``pop`` for a client without a repeat purchase
        (``x = 0``) or whose mean spend on them is not positive. The draws are the
        posterior's thinned to about ``draws`` and at most ``draws`` of them, in the
        library's order (chains one after the other).

        Computed in NumPy as ``pop + w (m - pop)``, in place (two arrays of clients x
        draws), not through the library, whose xarray broadcasting took 1.8 s for 20,000
        clients x 400 draws where this takes 0.06 s; the test compares both, value for
        value (relative difference below 1e-13).

        Parameters
        ----------
        frequency : array (clients,)
            Repeat purchase days ``x``.
        mean_spend : array (clients,)
            Mean spend on them ``m`` (money); not positive: no repeat spend observed.
        """
        post = self.posterior(draws)
        p, q, v = (post[k].values.reshape(-1)[None, :draws] for k in ("p", "q", "v"))
        m = np.asarray(mean_spend, float)
        # no repeat purchase, or none with a positive spend: the population mean
        x = np.where(m > 0, np.asarray(frequency, float), 0.0)[:, None]
        m = np.where(x[:, 0] > 0, m, 1.0)[:, None]
        population = v * p / (q - 1)
        weight = p * x
        spend = weight + (q - 1)
        weight /= spend
        np.subtract(m, population, out=spend)
        spend *= weight
        spend += population
        return spend

    def summary(self) -> pd.DataFrame:
        """ArviZ summary of ``p, q, v`` and the population mean spend ``p v / (q - 1)``."""
        post = self.posterior()
        mean = (post["p"] * post["v"] / (post["q"] - 1)).rename("population_mean_spend")
        ds = xr.merge([post, mean])
        return az.summary(az.InferenceData(posterior=ds), hdi_prob=HDI_PROB)

    def prior_predictive(self, mean_spend: float = 1.0, samples: int = 2000, frequency: int = 3,
                         seed: int = 0) -> dict[str, float]:
        """Mean spend per purchase day of ``samples`` simulated clients with ``frequency``
        repeat purchase days under the priors (scaled to a store whose mean spend is
        ``mean_spend``): quantiles 5/50/95% (money)."""
        rng = np.random.default_rng(seed)
        pri = self.priors_
        scale = pd.DataFrame({"monetary_value": [mean_spend]})
        p, q, v = (rng.gamma(pri[k][1], 1 / self._rate(pri[k][2], scale), samples)
                   for k in ("p", "q", "v"))
        nu = rng.gamma(q, 1 / v)
        z = rng.gamma(p[:, None] * np.ones(frequency), 1 / nu[:, None]).mean(axis=1)
        return {f"mean_spend_q{k}": float(np.quantile(z, k / 100)) for k in (5, 50, 95)}


# --------------------------------------------------------------------------- checks
def purchases_by_frequency(frequency: np.ndarray, expected: np.ndarray, actual: np.ndarray,
                           top: int = 7) -> pd.DataFrame:
    """Mean expected against mean actual holdout purchase days by calibration frequency
    (``0 .. top-1`` and ``top+``): the standard BTYD check (Fader, Hardie and Lee 2005,
    fig. 3).

    Parameters
    ----------
    frequency, expected, actual : arrays (clients,)
        Calibration repeat purchase days, expected and actual holdout purchase days.
    """
    f = np.minimum(np.asarray(frequency, int), top)
    df = pd.DataFrame({"frequency": f, "expected": expected, "actual": actual})
    out = df.groupby("frequency").agg(clients=("actual", "size"), expected=("expected", "mean"),
                                      actual=("actual", "mean")).reset_index()
    out["frequency_group"] = [f"{k}+" if k == top else str(k) for k in out["frequency"]]
    return out


def simulate_bgnbd(clients: int, T: float, r: float, alpha: float, a: float, b: float,
                   seed: int = 0, horizon: float = 0.0, whole_days: bool = False
                   ) -> pd.DataFrame:
    """Purchase histories from the BG/NBD generative process (days, continuous time):
    ``frequency``, ``recency``, ``T`` (``recency`` floored to whole days with
    ``whole_days``), and with ``horizon`` > 0 the purchases in the next ``horizon`` days
    (``future``).

    Parameters
    ----------
    clients : int
        Number of clients, each observed for ``T`` days from their first purchase.
    r, alpha, a, b : float
        Planted parameters.
    """
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1 / alpha, clients)
    p = rng.beta(a, b, clients)
    freq = np.zeros(clients, int)
    rec = np.zeros(clients)
    fut = np.zeros(clients, int)
    for i in range(clients):
        t, alive = 0.0, True
        while alive:
            t += rng.exponential(1 / lam[i])
            if t > T + horizon:
                break
            if t <= T:
                freq[i] += 1
                rec[i] = t
            else:
                fut[i] += 1
            alive = rng.random() > p[i]
    out = pd.DataFrame({"frequency": freq, "recency": np.floor(rec) if whole_days else rec,
                        "T": float(T)})
    out.loc[out["frequency"] == 0, "recency"] = 0.0
    if horizon:
        out["future"] = fut
    return out
