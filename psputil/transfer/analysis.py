"""The transfer chapter's analysis: rank correlations, the verdict on the conjecture, claim C6, tables.

Works on the result rows of ``psputil.transfer.compute_transfer`` (plain dicts).
The conjecture (the paper's closing lines): gradually pruned networks extract
features less tied to specific classes (higher second-order PSP-entropy), which
should make them better for transfer. Our verdict needs both parts in our runs:
(1) among the trained sources (dense, G, 1-S, reinit, random) the target probe
accuracy rises with the source's second-order PSP-entropy on its own data: the
Spearman rho, averaged over source/target pairs, has a 95 % bootstrap interval above
0 (resampled within each pair); (2) G's probe accuracy is at least 1-S's at matched
compression, on average over the pairs and milestones.
"""

import html
import math

from psputil.book.pages import Block, ClaimRow
from psputil.rank_stats import bootstrap_spearman

TRAINED_KINDS = ("dense", "G", "1-S", "reinit", "random")  # the sources the correlation ranks
ENTROPIES = ("entropy2_source", "entropy1_source", "entropy2_target", "entropy1_target")
TEST = ("Spearman rho of H2 (source data) vs target probe accuracy over the trained sources, mean of the "
        "within-pair rhos: 95 % bootstrap CI (resampled within pairs) above 0; and mean G - 1-S probe accuracy "
        ">= 0 points at matched milestones")
CLAIM = ("Sparse features with higher 2nd-order PSP-entropy transfer better: linear-probe accuracy on the "
         "target rises with it, and G >= 1-S at matched compression (conjecture of Sec. 6)")


def pair_label(row):
    """"lenet5-fashion -> mnist-5k" for a result row."""
    return f"{row['setup']} -> {row['target']}"


def correlation(rows, x="entropy2_source", y="probe_accuracy", kinds=TRAINED_KINDS, resamples=2000, seed=0):
    """Spearman rho of `x` vs `y` over the rows of `kinds`, mean over pairs, with a stratified bootstrap CI.

    Pairs with fewer than 3 usable rows are left out. Returns a ``RankCorrelation`` or None.
    """
    usable = [r for r in rows if r["kind"] in kinds and _finite(r.get(x)) and _finite(r.get(y))]
    counts = {}
    for r in usable:
        counts[pair_label(r)] = counts.get(pair_label(r), 0) + 1
    usable = [r for r in usable if counts[pair_label(r)] >= 3]
    if not usable:
        return None
    return bootstrap_spearman([r[x] for r in usable], [r[y] for r in usable], [pair_label(r) for r in usable],
                              resamples=resamples, seed=seed)


def g_minus_oneshot(rows, y="probe_accuracy"):
    """Mean over (pair, milestone) of mean G minus mean 1-S `y`: (difference, list of per-milestone differences)."""
    cells = {}
    for r in rows:
        if r["kind"] in ("G", "1-S") and _finite(r.get(y)):
            cells.setdefault((pair_label(r), r["rate"]), {}).setdefault(r["kind"], []).append(r[y])
    diffs = [_mean(c["G"]) - _mean(c["1-S"]) for c in cells.values() if "G" in c and "1-S" in c]
    return (_mean(diffs) if diffs else math.nan), diffs


def conjecture(rows, resamples=2000, seed=0, accuracy="probe_accuracy"):
    """The computed verdict on the conjecture and the numbers behind it.

    Returns:
        dict: "verdict" (True / False / None when not computable), "statement" (plain text
        built from the numbers), "correlation" (the ``RankCorrelation`` of the second-order
        source entropy), "correlations" (entropy name -> ``RankCorrelation`` or None),
        "g_minus_1s" (mean accuracy difference, points), "g_minus_1s_cells", "n_pairs", "seeds".
    """
    correlations = {e: correlation(rows, e, accuracy, resamples=resamples, seed=seed) for e in ENTROPIES}
    main = correlations["entropy2_source"]
    diff, cells = g_minus_oneshot(rows, accuracy)
    seeds = sorted({r["seed"] for r in rows})
    if main is None or main.used == 0 or not cells:
        verdict = None
        statement = ("Not computable in this run: it needs at least 3 trained sources per pair with finite "
                     "second-order entropies, and G and 1-S at a common milestone.")
    else:
        sign = main.excludes_zero()
        verdict = sign > 0 and diff >= 0
        trend = {1: "rises", -1: "falls", 0: "shows no clear trend"}[sign]
        statement = (
            f"Target {_what(accuracy)} {trend} with the source's second-order PSP-entropy: Spearman rho = "
            f"{main.rho:+.2f} (95 % bootstrap CI [{main.low:+.2f}, {main.high:+.2f}], {main.n} sources in "
            f"{main.groups} pair(s)). G {'beats or matches' if diff >= 0 else 'trails'} 1-S by {diff:+.2f} points "
            f"on average over {len(cells)} matched milestone(s) "
            f"(G ahead at {sum(d > 0 for d in cells)}/{len(cells)}). "
            f"The conjecture {'holds' if verdict else 'does not hold'} in our runs."
        )
    return {"verdict": verdict, "statement": statement, "correlation": main, "correlations": correlations,
            "g_minus_1s": diff, "g_minus_1s_cells": cells, "n_pairs": len({pair_label(r) for r in rows}),
            "seeds": seeds}


def claim_row(rows, profile="", resamples=2000, seed=0):
    """Claim C6 as a ``psputil.book.ClaimRow`` with the computed verdict (None when not computable)."""
    result = conjecture(rows, resamples, seed)
    main = result["correlation"]
    numbers = "" if result["verdict"] is None else (
        f"rho(H2 source, probe acc.) = {main.rho:+.2f} [{main.low:+.2f}, {main.high:+.2f}] (n = {main.n}, "
        f"{main.groups} pair(s)); G - 1-S = {result['g_minus_1s']:+.2f} points over "
        f"{len(result['g_minus_1s_cells'])} milestone(s)"
    )
    return ClaimRow("C6", CLAIM, result["verdict"], numbers, result["seeds"], profile, test=TEST)


def summary(rows, y="probe_accuracy"):
    """Rows averaged over seeds: one dict per (pair, kind, rate) with means, std of `y` and n."""
    groups = {}
    for r in rows:
        groups.setdefault((pair_label(r), r["kind"], r["rate"]), []).append(r)
    out = []
    for (pair, kind, rate), members in groups.items():
        values = [m[y] for m in members]
        mean = _mean(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
        entry = {"pair": pair, "kind": kind, "rate": rate, "n": len(members), y: mean, f"{y}_std": std}
        for key in ("sparsity", "finetune_accuracy", *ENTROPIES):
            entry[key] = _mean([m[key] for m in members])
        out.append(entry)
    return out


COLUMNS = (("pair", "pair", "{}"), ("kind", "source", "{}"), ("rate", "milestone %", "{}"),
           ("sparsity", "sparsity %", "{:.2f}"), ("n", "seeds", "{}"),
           ("probe_accuracy", "probe acc. %", "{:.2f}"), ("probe_accuracy_std", "± std", "{:.2f}"),
           ("finetune_accuracy", "fine-tuned acc. %", "{:.2f}"),
           ("entropy1_source", "H1 source", "{:.3f}"), ("entropy2_source", "H2 source", "{:.3f}"),
           ("entropy1_target", "H1 target", "{:.3f}"), ("entropy2_target", "H2 target", "{:.3f}"))


def table(rows):
    """An HTML/markdown table of the seed-averaged results (``summary``) of `rows`."""
    entries = summary(rows)

    def cell(entry, key, fmt):
        value = entry.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        return fmt.format(value)

    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(e, k, f))}</td>" for k, _, f in COLUMNS) + "</tr>"
                   for e in entries)
    html_text = f'<table class="table transfer-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    markdown = ["| " + " | ".join(t for _, t, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    markdown += ["| " + " | ".join(cell(e, k, f) for k, _, f in COLUMNS) + " |" for e in entries]
    return Block(html_text, "\n".join(markdown))


def _what(accuracy):
    return "linear-probe accuracy" if accuracy == "probe_accuracy" else accuracy.replace("_", " ")


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def _mean(values):
    values = [v for v in values if _finite(v)]
    return sum(values) / len(values) if values else math.nan
