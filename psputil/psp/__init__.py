"""PSP analyses (Sections 4, 5.3): the L2 norm and PSP-entropy of the inputs of every ``nn.ReLU``.

``entropy`` (``psp.entropy``), ``l2`` (``psp.l2``) and ``activity`` (always-off and
always-on neurons, ``psp.activity``) measure one model; ``PSPEntropy``, ``PSPL2`` and
``Activity`` are the same quantities as streaming metrics for the loss-plane grid.
``entropy(..., neurons="live")`` averages over live neurons only; ``measure`` runs
several metrics in one pass (``psp.passes``). Counting lives in ``psp.counts``; reading
the PSPs (forward hooks on the ReLU modules) in ``psp.activations``.
"""

from psputil.psp.activity import Activity, ActivityResult, activity  # noqa: F401 (interface)
from psputil.psp.entropy import EntropyResult, PSPEntropy, entropy  # noqa: F401
from psputil.psp.l2 import L2Result, PSPL2, l2  # noqa: F401
from psputil.psp.passes import measure  # noqa: F401
