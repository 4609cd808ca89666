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

#: |SMD| above which a covariate counts as imbalanced (Austin 2009)
SMD_LIMIT = 0.1
#: a group whose conversion is this high was (almost surely) picked among buyers; one
#: whose conversion is as low (1 - ALL_BOUGHT) among clients who did not buy
ALL_BOUGHT = 0.99
PRE_COVARIATES = ("pre_orders", "pre_revenue")
DEMOGRAPHICS = ("age", "gender", "higher_education")


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

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["balance"] = self.balance.to_dict("records")
        return d

    def sentence(self) -> str:
        """The verdict in words (for the CLI and the report)."""
        return " ".join(self.reasons)


def diagnose_design(df: pd.DataFrame) -> DesignVerdict:
    """Read campaign 1's design from a store frame.

    Parameters
    ----------
    df
        One row per client of the store with ``group`` (``treated`` / ``control`` /
        ``untreated``), ``converted`` (bool), ``pre_orders`` (purchase days before the
        window), ``pre_revenue`` (money), ``age``, ``gender`` (0/1, may be missing) and
        ``higher_education`` (0/1).

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
    untreated_buyers = groups["untreated"][groups["untreated"]["converted"]]
    rows = []
    for cov in PRE_COVARIATES + DEMOGRAPHICS:
        rows.append({
            "covariate": cov,
            "treated_mean": float(pd.to_numeric(groups["treated"][cov], errors="coerce").mean()),
            "control_mean": float(pd.to_numeric(groups["control"][cov], errors="coerce").mean()),
            "untreated_mean": float(pd.to_numeric(groups["untreated"][cov],
                                                  errors="coerce").mean()),
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
    if n["control"] == 0:
        reasons.append("The control file has no client of the store, so it allows no "
                       "comparison.")
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
    if imbalanced and n["control"]:
        reasons.append(f"The control file {'also ' if selected else ''}differs from the "
                       "treated group before the email (|SMD| > 0.1 on "
                       + ", ".join(imbalanced) + ").")
    valid = bool(n["control"]) and not selected and not imbalanced
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
    return DesignVerdict(conv, n, balance, selected, imbalanced, valid, primary, reasons)


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
