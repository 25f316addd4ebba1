"""Progress bars: ``tqdm.auto`` that honours ``TQDM_DISABLE`` everywhere.

tqdm reads ``TQDM_DISABLE`` only for its plain terminal bar; the notebook bar that
``tqdm.auto`` picks inside a kernel sets ``disable=False`` itself, so a bar would become
widget state in an executed notebook. The book's kernels run with ``TQDM_DISABLE=1``
(``psputil.book.execution``).
"""

import os

from tqdm.auto import tqdm

_OFF = {"1", "true", "yes", "on"}


def bar(iterable=None, progress=True, **kwargs):
    """A tqdm bar, disabled when `progress` is false or ``$TQDM_DISABLE`` is set (1, true, yes, on)."""
    off = not progress or os.environ.get("TQDM_DISABLE", "").strip().lower() in _OFF
    return tqdm(iterable, disable=off, **kwargs)
