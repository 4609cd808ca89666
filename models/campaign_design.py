"""What the campaign's design allows: read from the data, never from the config.

A campaign file pair (treated ids, control ids) is only a valid experiment if the control
group is comparable to the treated one. :func:`diagnose_design` compares each group's
conversion with the untreated population of the store and checks balance on pre-period
behaviour and demographics, then says in words which comparisons are valid and why:

* the **control file** for conversion: valid when the control converts like comparable
  untreated clients (not picked among buyers) and is balanced with the treated group on
  pre-period behaviour;
* the **whole store, adjusted**: the treated against every untreated client, adjusted for
  what drove selection into treatment (pre-period behaviour, demographics, city,
  cluster); valid when the treated overlap with the untreated population on those
  variables (checked by the estimated treatment propensity, see
  :mod:`models.observational`);
* the **control file among buyers** (revenue, items, average purchase per buyer) with Lee
  bounds: shown beside, never the headline when the control was picked among buyers.

Reference: Imbens & Rubin (2015), *Causal Inference for Statistics, Social, and
Biomedical Sciences*, ch. 12-14 (balance, overlap, unconfoundedness).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: |SMD| above which a covariate counts as imbalanced (Austin 2009)
SMD_LIMIT = 0.1
#: a group whose conversion is this high was (almost surely) picked among buyers; one
#: whose conversion is as low (1 - ALL_BOUGHT) among clients who did not buy
ALL_BOUGHT = 0.99
PRE_COVARIATES = ("pre_orders", "pre_revenue")
DEMOGRAPHICS = ("age", "gender", "higher_education")


def sample_ratio_mismatch(n_treated: int, n_control: int, expected_share: float = 0.5,
                          alpha: float = 0.001) -> dict[str, Any]:
    """Chi-square test that the groups have their planned sizes (sample-ratio mismatch;
    Kohavi et al. 2020, ch. 21: alpha 0.001).

    Parameters
    ----------
    n_treated, n_control
        Clients in each group.
    expected_share
        Planned share of the treated.

    Raises
    ------
    ValueError
        When both groups are empty.
    """
    total = n_treated + n_control
    if total == 0:
        raise ValueError("both campaign groups are empty")
    expected = [total * expected_share, total * (1 - expected_share)]
    chi2, p = stats.chisquare([n_treated, n_control], expected)
    return {"n_treated": n_treated, "n_control": n_control, "chi2": float(chi2),
            "p_value": float(p), "mismatch": bool(p < alpha), "alpha": alpha}


def _mean(values: pd.Series) -> float:
    """Mean as a float, NaN for an empty group (nullable dtypes give ``pd.NA`` there)."""
    return float(pd.to_numeric(values, errors="coerce").astype(float).mean())


def smd(a: pd.Series, b: pd.Series) -> float:
    """Standardized mean difference of ``a`` against ``b`` (pooled SD; 0 when both are
    constant)."""
    a, b = pd.to_numeric(a, errors="coerce").dropna(), pd.to_numeric(b, errors="coerce").dropna()
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return float((a.mean() - b.mean()) / pooled) if pooled > 0 else 0.0


@dataclass
class DesignVerdict:
    """What the data say about campaign 1's design (see :func:`diagnose_design`)."""

    conversion: dict[str, float]
    clients: dict[str, int]
    balance: pd.DataFrame
    control_selected_on_outcome: bool
    control_imbalanced: list[str]
    control_valid_for_conversion: bool
    primary: str  # "control file" or "whole store"
    reasons: list[str] = field(default_factory=list)
    #: why the control file is not used, in a few words each (empty when it is valid)
    control_problems: list[str] = field(default_factory=list)
    #: the sample-ratio test (:func:`sample_ratio_mismatch`), when the id counts were given
    srm: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["balance"] = self.balance.to_dict("records")
        return d

    def sentence(self) -> str:
        """The verdict in words (for the CLI and the report)."""
        return " ".join(self.reasons)


def diagnose_design(df: pd.DataFrame, ids: dict[str, int] | None = None,
                    group_sizes: dict[str, int] | None = None,
                    group_buyers: dict[str, int] | None = None) -> DesignVerdict:
    """Read campaign 1's design from a store frame.

    Parameters
    ----------
    df
        One row per client of the store with ``group`` (``treated`` / ``control`` /
        ``untreated``), ``converted`` (bool), ``pre_orders`` (purchase days before the
        window), ``pre_revenue`` (money), ``age``, ``gender`` (0/1, may be missing) and
        ``higher_education`` (0/1).
    ids
        What the id files held (``treated_ids``, ``control_ids``: ids read;
        ``dropped_unknown_treated`` / ``dropped_unknown_control``: ids that are no client
        of the store). With it, a sample-ratio mismatch between the groups' clients
        (chi-square against the files' ratio, p < 0.001; Kohavi et al. 2020, *Trustworthy
        Online Controlled Experiments*, ch. 21) and an empty control file are explained
        and make the control file invalid.
    group_sizes, group_buyers
        Clients per group in the whole store and how many of them bought in the window,
        when ``df`` holds a uniform sample of a group: the counts and conversion rates
        reported are these, the means and SMDs the sample's (unbiased for a uniform
        sample).

    Returns
    -------
    DesignVerdict
        Conversion per group, balance table (SMD of each covariate: control vs treated,
        treated vs untreated, control vs untreated buyers) and which comparison is primary.

    Raises
    ------
    ValueError
        When the treated group is empty (there is nothing to compare).
    """
    groups = {g: df[df["group"] == g] for g in ("treated", "control", "untreated")}
    if groups["treated"].empty:
        raise ValueError("the treated group is empty: no treated id is a client of the store")
    conv = {g: float(part["converted"].mean()) if len(part) else float("nan")
            for g, part in groups.items()}
    n = {g: len(part) for g, part in groups.items()}
    if group_sizes is not None:
        n = {g: int(group_sizes.get(g, n[g])) for g in n}
    if group_buyers is not None:
        conv = {g: group_buyers[g] / n[g] if g in group_buyers and n[g] else conv[g]
                for g in conv}
    untreated_buyers = groups["untreated"][groups["untreated"]["converted"]]
    rows = []
    for cov in PRE_COVARIATES + DEMOGRAPHICS:
        rows.append({
            "covariate": cov,
            "treated_mean": _mean(groups["treated"][cov]),
            "control_mean": _mean(groups["control"][cov]),
            "untreated_mean": _mean(groups["untreated"][cov]),
            "smd_control_vs_treated": smd(groups["control"][cov], groups["treated"][cov]),
            "smd_treated_vs_untreated": smd(groups["treated"][cov], groups["untreated"][cov]),
            "smd_control_vs_untreated_buyers": smd(groups["control"][cov],
                                                   untreated_buyers[cov]),
        })
    balance = pd.DataFrame(rows)
    reasons: list[str] = []
    never = bool(n["control"]) and conv["control"] <= 1 - ALL_BOUGHT
    selected = bool(n["control"]) and (conv["control"] >= ALL_BOUGHT or never)
    imbalanced = [r["covariate"] for r in rows if r["covariate"] in PRE_COVARIATES
                  and abs(r["smd_control_vs_treated"]) > SMD_LIMIT]
    problems: list[str] = []
    srm = None
    if ids and ids.get("treated_ids") and ids.get("control_ids") and n["control"]:
        share = ids["treated_ids"] / (ids["treated_ids"] + ids["control_ids"])
        srm = sample_ratio_mismatch(n["treated"], n["control"], share)
    if n["control"] == 0:
        lost = (ids or {}).get("dropped_unknown_control", 0)
        why = (f" (none of its {lost:,} ids is a client of the store: a file of another "
               "system or another period?)" if lost else "")
        reasons.append(f"The control file has no client of the store{why}, so it allows no "
                       "comparison.")
        problems.append("control file empty" + (f": none of its {lost:,} ids is a client"
                                                if lost else ""))
    elif srm is not None and srm["mismatch"]:
        lost = {g: (ids or {}).get(f"dropped_unknown_{g}", 0) for g in ("treated", "control")}
        reasons.append(
            f"The groups do not have the sizes of their files (sample-ratio mismatch: "
            f"{n['treated']:,} treated and {n['control']:,} control clients of the store for "
            f"{ids['treated_ids']:,} and {ids['control_ids']:,} ids, p = {srm['p_value']:.2g}; "
            f"ids that are no client: {lost['treated']:,} treated, {lost['control']:,} "
            "control): clients were lost from one group after the assignment, so the "
            "control file is not a valid comparison.")
        problems.append(f"sample-ratio mismatch ({n['treated']:,} treated vs "
                        f"{n['control']:,} control clients, p = {srm['p_value']:.2g})")
    elif never:
        reasons.append(
            f"{conv['control']:.1%} of the control file bought in the window against "
            f"{conv['untreated']:.1%} of the other untreated clients: the controls were picked "
            "among clients who did not buy, so comparing conversion with them says nothing "
            "about the email (it would flatter it).")
    elif selected:
        reasons.append(
            f"{conv['control']:.1%} of the control file bought in the window against "
            f"{conv['untreated']:.1%} of the other untreated clients: the controls were picked "
            "among buyers, so comparing conversion with them says nothing about the email "
            "(it would make the email look harmful).")
    if never:
        problems.append("control selected among clients who did not buy")
    elif selected:
        problems.append("control selected among buyers")
    if imbalanced and n["control"]:
        problems.append("control imbalanced before the email")
        reasons.append(f"The control file {'also ' if selected else ''}differs from the "
                       "treated group before the email (|SMD| > 0.1 on "
                       + ", ".join(imbalanced) + ").")
    valid = bool(n["control"]) and not problems
    if valid:
        reasons.append("The control file converts like the rest of the store's untreated "
                       "clients and matches the treated group before the email, so it is a "
                       "valid comparison; the whole store, adjusted, is shown as a "
                       "cross-check.")
        primary = "control file"
    else:
        reasons.append(
            f"The primary comparison is therefore the treated clients against all "
            f"{n['untreated']:,} untreated clients of the store, adjusted for pre-period "
            "purchases and spend, demographics, city and cluster: valid if these variables "
            "carry what drove the store's choice of whom to email (checked by overlap, a "
            "placebo before the email and a sensitivity analysis).")
        primary = "whole store"
    return DesignVerdict(conv, n, balance, selected, imbalanced, valid, primary, reasons,
                         problems, srm)


def lee_bounds(y_treated: np.ndarray, y_control: np.ndarray, n_treated: int, n_control: int
               ) -> dict[str, float]:
    """Lee (2009) bounds on the effect among clients who would buy either way.

    ``y_treated`` / ``y_control`` are the outcomes of the buyers of each group (e.g.
    revenue per buyer), ``n_*`` the group sizes. The group with the larger share of buyers
    is trimmed by ``q = (p_hi - p_lo) / p_hi`` from the top (lower bound) or the bottom
    (upper bound) of its outcome distribution; assumes the email only ever adds buyers
    (monotonicity) and comparable groups.

    Returns ``trim_share``, ``trimmed_group``, ``lower``, ``upper`` (treated - control,
    outcome units) and the untrimmed ``naive`` difference.

    Raises
    ------
    ValueError
        When a group has no buyers.
    """
    y_t, y_c = np.sort(np.asarray(y_treated, float)), np.sort(np.asarray(y_control, float))
    if len(y_t) == 0 or len(y_c) == 0:
        raise ValueError("Lee bounds need buyers in both groups "
                         f"(treated buyers {len(y_t)}, control buyers {len(y_c)})")
    p_t, p_c = len(y_t) / n_treated, len(y_c) / n_control
    naive = float(y_t.mean() - y_c.mean())
    if p_t >= p_c:
        q, trimmed = (p_t - p_c) / p_t, "treated"
        k = int(round(len(y_t) * (1 - q)))
        lower, upper = y_t[:max(k, 1)].mean() - y_c.mean(), y_t[-max(k, 1):].mean() - y_c.mean()
    else:
        q, trimmed = (p_c - p_t) / p_c, "control"
        k = int(round(len(y_c) * (1 - q)))
        lower, upper = y_t.mean() - y_c[-max(k, 1):].mean(), y_t.mean() - y_c[:max(k, 1)].mean()
    return {"trim_share": float(q), "trimmed_group": trimmed, "lower": float(lower),
            "upper": float(upper), "naive": naive}


def e_value(risk_ratio: float) -> float:
    """E-value of a risk ratio (VanderWeele & Ding 2017, Ann. Intern. Med. 167:268).

    The minimum strength of association (risk-ratio scale) an unmeasured confounder would
    need with both the treatment and the outcome to explain the observed ratio away; 1
    when the ratio is 1 (nothing to explain).
    """
    rr = float(risk_ratio)
    if not np.isfinite(rr) or rr <= 0:
        return float("nan")
    rr = rr if rr >= 1 else 1 / rr
    return float(rr + np.sqrt(rr * (rr - 1)))
