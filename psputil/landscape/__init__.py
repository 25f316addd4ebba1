"""The loss plane through two solutions (Fig. 2a): the plane (``landscape.plane``) and its batched grid (``landscape.grid``).

``theta(a, b) = theta_G + a u + b |u| v`` with ``u = theta_1S - theta_G`` and ``v`` a
seeded unit vector orthogonal to ``u``: G at (0, 0), 1-S at (1, 0). With a mask
(``union_mask`` of both solutions' masks) ``v`` stays on the surviving weights.
"""

from psputil.landscape.grid import evaluate_grid  # noqa: F401 (the package's interface)
from psputil.landscape.plane import Plane, plane_through, union_mask  # noqa: F401
