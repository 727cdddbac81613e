"""The report's reading in plain words, computed from its table: which variables the clusters follow, and
whether nuisance (density, size, stain levels, position) or treatment comes first. No fixed sentence: every
name and number comes from the scores."""

from __future__ import annotations

import pandas as pd

from phenossl.report.variables import NUISANCE, TREATMENT

#: AMI levels and their words
STRENGTH = ((0.3, "strongly"), (0.1, "clearly"), (0.03, "weakly"))
NOTHING = 0.03  # below this AMI a clustering follows nothing worth naming
MAX_NAMED = 3


def strength(value: float) -> str:
    for level, word in STRENGTH:
        if value >= level:
            return word
    return "hardly"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _families(rows: pd.DataFrame) -> list[str]:
    """'local density (neighbours 0.41)': a nuisance family named by its best variable."""
    return [f"{r.family} ({r.variable} {r.cluster_ami:.2f})" for r in rows.itertuples()]


def _treatments(rows: pd.DataFrame) -> list[str]:
    return [f"{r.variable} ({r.cluster_ami:.2f})" for r in rows.itertuples()]


def clusters_reading(table: pd.DataFrame) -> str:
    """Which kinds of variable the clusters follow (AMI; numbers on their quantile bins): each nuisance family
    (local density, nucleus size, stain levels, position) by its best variable, against the treatments."""
    scored = table[table["cluster_ami"].notna()].sort_values("cluster_ami", ascending=False)
    if scored.empty:
        return "No variable could be scored against the clusters."
    top = scored.iloc[0]
    if top.cluster_ami < NOTHING:
        return (f"The clusters follow none of the {len(scored)} variables measured (the highest AMI is "
                f"{top.variable}'s, {top.cluster_ami:.2f}).")
    best = scored.drop_duplicates("family")  # each family's best variable, highest first
    nuisance = best[(best["group"] == NUISANCE) & (best["cluster_ami"] >= NOTHING)]
    treatment = best[best["group"] == TREATMENT]
    if treatment.empty:
        return (f"The clusters {strength(top.cluster_ami)} follow {_join(_families(nuisance.head(MAX_NAMED)))}; "
                "the run has no treatment column.")
    first = treatment.iloc[0]
    if nuisance.empty or first.cluster_ami >= nuisance.iloc[0].cluster_ami:
        lead = treatment[treatment["cluster_ami"] >= NOTHING].head(MAX_NAMED)
        rest = "" if nuisance.empty else f" more than any nuisance: the first is {_families(nuisance.head(1))[0]}"
        return f"The clusters {strength(first.cluster_ami)} follow {_join(_treatments(lead))}{rest}."
    ahead = nuisance[nuisance["cluster_ami"] > first.cluster_ami].head(MAX_NAMED)
    return (f"The clusters {strength(top.cluster_ami)} follow {_join(_families(ahead))} more than "
            f"{_join(_treatments(treatment.head(2)))}.")


def embedding_reading(table: pd.DataFrame) -> str:
    """What a linear probe recovers from the embedding with whole wells held out: the best-predicted nuisance
    number (R2) and the best-predicted treatment (balanced accuracy against chance)."""
    probed = table[table["probe_score"].notna()]
    if probed.empty:
        reasons = table.loc[table["probe"].astype(str).str.startswith("skipped"), "probe"]
        why = reasons.iloc[0].removeprefix("skipped: ") if len(reasons) else "no variable could be probed"
        return f"The embedding was not probed ({why})."
    parts = []
    numbers = probed[(probed["probe"] == "R2") & (probed["group"] == NUISANCE)].sort_values("probe_score")
    if len(numbers):
        best = numbers.iloc[-1]
        parts.append(f"{best.variable} with R2 {best.probe_score:.2f}" if best.probe_score > 0 else
                     f"no nuisance number better than its mean (the best R2: {best.variable}, {best.probe_score:.2f})")
    levels = probed[probed["probe"] == "balanced accuracy"].copy()
    if len(levels):
        levels["lift"] = levels["probe_score"] - levels["probe_chance"]
        for group in (TREATMENT, NUISANCE):
            rows = levels[levels["group"] == group].sort_values("lift")
            if len(rows):
                best = rows.iloc[-1]
                parts.append(f"{best.variable} with balanced accuracy {best.probe_score:.2f} "
                             f"(chance {best.probe_chance:.2f})")
    if not parts:
        return "The embedding was probed, but no score is comparable."
    return "A linear probe on the embedding (whole wells held out) recovers " + "; ".join(parts) + "."


def reading(table: pd.DataFrame) -> str:
    """The report's first lines: the clusters' reading, then the embedding's."""
    return clusters_reading(table) + " " + embedding_reading(table)
