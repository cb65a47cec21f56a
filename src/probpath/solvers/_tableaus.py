"""Butcher tableaux of the explicit Runge–Kutta methods behind :func:`odeint`.

A method is data: the nodes ``c``, the stage matrix ``a`` (lower triangular, rows
given without their zero diagonal), the weights ``b`` and, for the adaptive methods,
the error weights ``e = b - b_hat`` of the embedded lower-order solution. One generic
step in ``ode.py`` runs all of them:

    k_i = f(t + c_i h, y + h sum_{j<i} a_ij k_j),    y_1 = y + h sum_i b_i k_i,
    err = h sum_i e_i k_i.

Coefficients are kept as Python floats, and only the non-zero ones are stored
(``(j, a_ij)`` pairs), so a stage costs one fused ``torch.add`` per non-zero term and
no tensor is built per step. Source: Hairer, Nørsett & Wanner, *Solving Ordinary
Differential Equations I* (2nd ed.), Sec. II.1, II.4 and II.6; Dormand & Prince (1980);
Bogacki & Shampine (1989).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ADAPTIVE", "FIXED", "ButcherTableau"]

Terms = tuple[tuple[int, float], ...]


def _sparse(row: tuple[float, ...]) -> Terms:
    return tuple((j, float(v)) for j, v in enumerate(row) if v != 0.0)


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method as data.

    Attributes:
        name: the ``method`` string of :func:`odeint`.
        order: order of the propagated solution.
        c: nodes, one per stage.
        a: stage rows ``a[i]`` for stage ``i + 1`` (stage 0 has no row).
        b: weights of the propagated solution.
        e: error weights ``b - b_hat`` (empty for fixed-step methods).
        error_order: order of the embedded solution plus one (the exponent ``k`` in
            ``h_new = h * err^(-1/k)``); 0 for fixed-step methods.
        fsal: the last stage is evaluated at ``(t + h, y_1)``, so it is the first stage
            of the next step (first same as last).
        dense: ``theta -> weights w`` with ``y(t + theta h) = y + h sum_i w_i k_i``.
    """

    name: str
    order: int
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    e: tuple[float, ...] = ()
    error_order: int = 0
    fsal: bool = False
    dense: Callable[[float], tuple[float, ...]] | None = None

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def a_terms(self) -> tuple[Terms, ...]:
        """Non-zero ``(j, a_ij)`` of each stage row."""
        return tuple(_sparse(row) for row in self.a)

    @property
    def b_terms(self) -> Terms:
        return _sparse(self.b)

    @property
    def e_terms(self) -> Terms:
        return _sparse(self.e)


def _hermite(b: tuple[float, ...]) -> Callable[[float], tuple[float, ...]]:
    """Cubic Hermite dense output from ``y0, y1 = y0 + h sum b_i k_i, f0 = k_0`` and
    ``f1 = k_last`` (FSAL): ``y(theta) = y0 + h01 (y1 - y0) + h (h10 f0 + h11 f1)`` with
    ``h01 = 3 theta^2 - 2 theta^3``, ``h10 = theta (1 - theta)^2``,
    ``h11 = theta^2 (theta - 1)``. Third-order accurate (Hairer et al. II.6)."""

    def weights(theta: float) -> tuple[float, ...]:
        h01 = theta * theta * (3.0 - 2.0 * theta)
        w = [h01 * bi for bi in b]
        w[0] += theta * (1.0 - theta) ** 2
        w[-1] += theta * theta * (theta - 1.0)
        return tuple(w)

    return weights


# Dormand–Prince continuous extension of order 4 (Hairer et al. II.6, code DOPRI5):
# y(theta) = y0 + theta*D + theta(1-theta)*(h k1 - D) + theta^2 (1-theta)*(2D - h k1 - h k7)
#            + theta^2 (1-theta)^2 * h sum d_i k_i,    with D = y1 - y0 = h sum b_i k_i.
_DOPRI5_D = (
    -12715105075 / 11282082432,
    0.0,
    87487479700 / 32700410799,
    -10690763975 / 1880347072,
    701980252875 / 199316789632,
    -1453857185 / 822651844,
    69997945 / 29380423,
)
_DOPRI5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)


def _dopri5_dense(theta: float) -> tuple[float, ...]:
    s1 = 1.0 - theta
    p, q, r, s = theta, theta * s1, theta * theta * s1, (theta * s1) ** 2
    w = [p * b + q * -b + r * 2.0 * b + s * d for b, d in zip(_DOPRI5_B, _DOPRI5_D, strict=True)]
    w[0] += q - r
    w[-1] -= r
    return tuple(w)


EULER = ButcherTableau("euler", 1, (0.0,), (), (1.0,))
MIDPOINT = ButcherTableau("midpoint", 2, (0.0, 0.5), ((0.5,),), (0.0, 1.0))
HEUN = ButcherTableau("heun", 2, (0.0, 1.0), ((1.0,),), (0.5, 0.5))
RK4 = ButcherTableau(  # Kutta's 3/8 rule
    "rk4",
    4,
    (0.0, 1 / 3, 2 / 3, 1.0),
    ((1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
    (1 / 8, 3 / 8, 3 / 8, 1 / 8),
)
_BOSH3_B = (2 / 9, 1 / 3, 4 / 9, 0.0)
BOSH3 = ButcherTableau(
    "bosh3",
    3,
    (0.0, 0.5, 0.75, 1.0),
    ((0.5,), (0.0, 0.75), _BOSH3_B[:3]),
    _BOSH3_B,
    e=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    error_order=3,
    fsal=True,
    dense=_hermite(_BOSH3_B),
)
DOPRI5 = ButcherTableau(
    "dopri5",
    5,
    (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    (
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DOPRI5_B[:6],
    ),
    _DOPRI5_B,
    e=(
        71 / 57600,
        0.0,
        -71 / 16695,
        71 / 1920,
        -17253 / 339200,
        22 / 525,
        -1 / 40,
    ),
    error_order=5,
    fsal=True,
    dense=_dopri5_dense,
)

FIXED: dict[str, ButcherTableau] = {m.name: m for m in (EULER, MIDPOINT, HEUN, RK4)}
ADAPTIVE: dict[str, ButcherTableau] = {m.name: m for m in (BOSH3, DOPRI5)}
