"""PSP analyses (Sections 4, 5.3): the L2 norm and PSP-entropy of the inputs of every ``nn.ReLU``.

``entropy`` and ``l2`` measure one model; ``PSPL2`` and ``PSPEntropy`` are the same
quantities as streaming metrics for the loss-plane grid. Counting lives in
``psp.counts``; reading the PSPs (forward hooks on the ReLU modules) in ``psp.activations``.
"""

from psputil.psp.entropy import EntropyResult, L2Result, PSPEntropy, PSPL2, entropy, l2  # noqa: F401 (interface)
