"""Page tables built from result rows: the transfer chapter's pivot and full table.

Rendering only: the numbers come from ``psputil.transfer.analysis.summary``.
"""

from psputil.book import blocks
from psputil.transfer.analysis import summary

COLUMNS = (("pair", "pair", "{}"), ("kind", "source", "{}"), ("rate", "milestone %", "{:g}"),
           ("sparsity", "sparsity %", "{:.2f}"), ("n", "seeds", "{}"),
           ("probe_accuracy", "probe acc. %", "{:.2f}"), ("probe_accuracy_std", "SD (n > 1)", "{:.2f}"),
           ("finetune_accuracy", "fine-tuned acc. %", "{:.2f}"),
           ("entropy1_source", "H1 source", "{:.3f}"), ("entropy2_source", "H2 source", "{:.3f}"),
           ("entropy1_target", "H1 target", "{:.3f}"), ("entropy2_target", "H2 target", "{:.3f}"))
KIND_ORDER = ("init", "dense", "G", "1-S", "lottery", "reinit", "random")


def transfer(rows):
    """A compact pivot (pair x milestone vs source kind, mean probe accuracy) and the full table folded below it.

    Sources without a milestone (init, dense) repeat in every milestone row of their pair.
    """
    entries = summary(rows)
    rates = {}
    for e in entries:
        if e["rate"] is not None:
            rates.setdefault(e["pair"], set()).add(e["rate"])
    cells = [{**e, "rate": rate} for e in entries
             for rate in (sorted(rates.get(e["pair"], ())) if e["rate"] is None else [e["rate"]])]
    pivot = blocks.pivot_table(cells, ("pair", "rate"), "kind", "probe_accuracy", "{:.2f}",
                               row_titles=("pair", "milestone %"), column_order=KIND_ORDER,
                               caption="Mean probe accuracy (%) on the target over seeds; init and dense do not "
                                       "depend on the milestone and repeat in each row.")
    full = blocks.data_table(entries, COLUMNS, css_class="transfer-table")
    return blocks.join(pivot, blocks.details("Full table: every source kind and milestone, n, entropies", full))
