"""Explicit Runge–Kutta methods as data: Butcher tableaus with error and dense-output weights.

A method is a :class:`ButcherTableau`; :func:`genmodels.integrate.odeint` has one stepping loop
for all of them.  For a step of size ``h`` from ``(t, y)`` with stages

    k_i = f(t + c_i h, y + h * sum_{j<i} a_ij k_j),    i = 1..s,

the new state is ``y1 = y + h * sum_i b_i k_i``; an embedded pair also gives the error estimate
``err = h * sum_i e_i k_i`` with ``e = b - b_hat``.  Dense output between ``t`` and ``t + h``
is ``y(t + theta h) = y + h * sum_i B_i(theta) k_i`` where each ``B_i`` is a polynomial in
``theta`` (see :meth:`ButcherTableau.dense_weights`).

Sources of the coefficients (facts from the papers):

- ``euler``, ``midpoint``: the textbook methods.
- ``rk4``: Kutta's 3/8 rule (Kutta 1901), which is what torchdiffeq's ``"rk4"`` runs.
- ``rk4_classic``: the classical fourth-order Runge–Kutta method.
- ``bosh3``: Bogacki & Shampine (1989), "A 3(2) pair of Runge–Kutta formulas",
  Appl. Math. Lett. 2(4).
- ``dopri5``: Dormand & Prince (1980), "A family of embedded Runge–Kutta formulae",
  J. Comput. Appl. Math. 6(1), with the embedded 4th-order solution of Shampine (1986); dense
  output through Shampine's midpoint weights (Shampine 1986,
  "Some practical Runge–Kutta formulas", Math. Comp. 46) and a quartic Hermite fit.
- ``tsit5``: Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first
  column simplifying assumption", Comput. Math. Appl. 62(2); dense output by cubic Hermite.
- ``dopri8``: the 8th-order formula of Hairer's DOP853 (Hairer, Nørsett & Wanner 1993, Solving
  Ordinary Differential Equations I, sec. II.10) with its embedded 5th-order error estimate;
  no dense output: its steps land on the requested output times.  (torchdiffeq's ``dopri8``
  is the Prince–Dormand 8(7) pair: an 8th-order method as well, with other coefficients.)
- ``heun2``: Heun's method (the explicit trapezoidal rule), order 2; ``heun3``: Heun's
  third-order method (Heun 1900, "Neue Methoden zur approximativen Integration der
  Differentialgleichungen einer unabhängigen Veränderlichen", Z. Math. Phys. 45), as
  torchdiffeq's fixed-step ``heun2``/``heun3``.
- ``adaptive_heun``: Heun's method with Euler's method embedded, a 2(1) pair; ``fehlberg2``:
  Fehlberg's RKF1(2) (Fehlberg 1969, "Low-order classical Runge–Kutta formulas with stepsize
  control and their application to some heat transfer problems", NASA TR R-315), advancing with
  its second-order formula as torchdiffeq does.  Both follow torchdiffeq's convention that the
  last stage, taken at ``t + h`` from the lower-order solution, is reused as the next step's
  first stage (``reuse_last``): one new evaluation per step for ``adaptive_heun``, two for
  ``fehlberg2``, the same steps and evaluations as torchdiffeq.  The reused stage differs from
  ``f(t + h, y1)`` by ``O(h^2)``, which keeps the local error ``O(h^3)``: the solve stays
  second order (the fixed-step path, ``step_size=``, runs the plain Runge–Kutta method).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ButcherTableau", "TABLEAUS", "get_tableau"]


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method.

    Attributes:
        name: the method's name, as passed to ``odeint(method=...)``.
        c: nodes, ``(s,)``.
        a: strictly lower-triangular rows, ``a[i]`` holds ``a_i0 .. a_i(i-1)`` (``a[0] == ()``).
        b: weights of the solution, ``(s,)``.
        order: order of ``b``.
        e: ``b - b_hat`` for the embedded error estimate, ``(s,)``; ``None`` for fixed-step only.
        error_order: order of the embedded solution ``b_hat`` (the step-size controller uses
            exponent ``1 / (error_order + 1)``).
        c_mid: weights ``w`` with ``y(t + h/2) ~ y + h * sum_i w_i k_i`` (quartic dense output);
            ``None`` means cubic Hermite through ``y, f(t, y), y1, f(t + h, y1)``.
        reuse_last: the last stage (node 1) is reused as the next adaptive step's first stage
            although its input is not ``y1`` (torchdiffeq's ``adaptive_heun`` and
            ``fehlberg2``); the cubic Hermite dense output then uses it for ``f(t + h, y1)``.

    Example:
        >>> get_tableau("dopri5").stages
        7
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    order: int
    e: tuple[float, ...] | None = None
    error_order: int | None = None
    c_mid: tuple[float, ...] | None = None
    reuse_last: bool = False

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.e is not None

    @property
    def fsal(self) -> bool:
        """First same as last: the last stage is ``f(t + h, y1)``, reused as the next ``k_1``."""
        return self.c[-1] == 1.0 and self.a[-1] == self.b[:-1] and self.b[-1] == 0.0

    def embedded(self) -> ButcherTableau:
        """The embedded lower-order method ``b_hat = b - e`` as a fixed-step tableau."""
        if self.e is None:
            raise ValueError(f"method {self.name!r} has no embedded error estimate")
        b_hat = tuple(bi - ei for bi, ei in zip(self.b, self.e))
        return ButcherTableau(self.name + "_embedded", self.c, self.a, b_hat, self.error_order)

    def dense_weights(self) -> np.ndarray:
        """Polynomial coefficients ``P`` (s, degree) of the dense output.

        ``y(t + theta h) = y + h * sum_i (sum_p P[i, p] theta^(p+1)) k_i``.  Needs ``f(t+h, y1)``
        as the last stage (FSAL); :func:`odeint` appends it for other methods.
        """
        s = self.stages
        f0 = np.zeros(s)
        f0[0] = 1.0
        f1 = np.zeros(s)
        f1[-1] = 1.0
        d = np.asarray(self.b, dtype=np.float64)
        if self.c_mid is None:
            # cubic Hermite: p(0)=0, p'(0)=f0, p(1)=d, p'(1)=f1
            return np.stack([f0, 3 * d - 2 * f0 - f1, f0 + f1 - 2 * d], axis=1)
        m = np.asarray(self.c_mid, dtype=np.float64)
        # quartic: p = f0 th + a2 th^2 + a3 th^3 + a4 th^4 with p(1)=d, p'(1)=f1, p(1/2)=m
        lhs = np.array([[1.0, 1.0, 1.0], [2.0, 3.0, 4.0], [0.25, 0.125, 0.0625]])
        rhs = np.stack([d - f0, f1 - f0, m - 0.5 * f0])  # (3, s)
        a234 = np.linalg.solve(lhs, rhs)  # (3, s)
        return np.concatenate([f0[:, None], a234.T], axis=1)


def _fixed(name: str, c, a, b, order: int) -> ButcherTableau:
    return ButcherTableau(name, tuple(map(float, c)), tuple(tuple(map(float, r)) for r in a),
                          tuple(map(float, b)), order)  # fmt: skip


def _pair(name, c, a, b, b_hat, order, error_order, c_mid=None, reuse_last=False):
    e = tuple(float(x) - float(y) for x, y in zip(b, b_hat))
    mid = None if c_mid is None else tuple(map(float, c_mid))
    return ButcherTableau(
        name, tuple(map(float, c)), tuple(tuple(map(float, r)) for r in a),
        tuple(map(float, b)), order, e, error_order, mid, reuse_last,
    )  # fmt: skip


_DOPRI5_B = (35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0)
_DOPRI5 = _pair(
    "dopri5",
    (0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1),
    (
        (),
        (1 / 5,),
        (3 / 40, 9 / 40),
        (44 / 45, -56 / 15, 32 / 9),
        (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
        (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
        _DOPRI5_B[:6],
    ),
    _DOPRI5_B,
    # Shampine (1986)'s 4th-order companion, as torchdiffeq uses (same step-size control);
    # Dormand & Prince's own b_hat is 5179/57600, 0, 7571/16695, 393/640, ...
    (1951 / 21600, 0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60),
    5,
    4,
    # Shampine (1986): weights of the 4th-order solution at the midpoint of the step
    c_mid=(
        6025192743 / 30085553152 / 2,
        0,
        51252292925 / 65400821598 / 2,
        -2691868925 / 45128329728 / 2,
        187940372067 / 1594534317056 / 2,
        -1776094331 / 19743644256 / 2,
        11237099 / 235043384 / 2,
    ),
)

_BOSH3 = _pair(
    "bosh3",
    (0, 1 / 2, 3 / 4, 1),
    ((), (1 / 2,), (0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    (2 / 9, 1 / 3, 4 / 9, 0),
    (7 / 24, 1 / 4, 1 / 3, 1 / 8),
    3,
    2,
)

_TSIT5_B = (
    0.09646076681806523,
    0.01,
    0.4798896504144996,
    1.379008574103742,
    -3.290069515436081,
    2.324710524099774,
    0.0,
)
_TSIT5_E = (  # b - b_hat (Tsitouras 2011, Table 1)
    -0.00178001105222577714,
    -0.0008164344596567469,
    0.007880878010261995,
    -0.1447110071732629,
    0.5823571654525552,
    -0.45808210592918697,
    1 / 66,
)
_TSIT5 = _pair(
    "tsit5",
    (0, 0.161, 0.327, 0.9, 0.9800255409045097, 1, 1),
    (
        (),
        (0.161,),
        (-0.008480655492356989, 0.335480655492357),
        (2.897153057105493, -6.359448489975075, 4.3622954328695815),
        (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
        (
            5.86145544294642,
            -12.92096931784711,
            8.159367898576159,
            -0.071584973281401,
            -0.028269050394068383,
        ),
        _TSIT5_B[:6],
    ),
    _TSIT5_B,
    tuple(b - e for b, e in zip(_TSIT5_B, _TSIT5_E)),
    5,
    4,
)

# DOP853 (Hairer, Norsett & Wanner 1993): 12 stages of the 8th-order formula, plus a 13th FSAL
# stage f(t + h, y1) used by the Hermite dense output and as the next step's first stage.
_DOP853_A = (
    (),
    (0.05260015195876773,),
    (0.0197250569845379, 0.0591751709536137),
    (0.02958758547680685, 0.0, 0.08876275643042054),
    (0.2413651341592667, 0.0, -0.8845494793282861, 0.924834003261792),
    (0.037037037037037035, 0.0, 0.0, 0.17082860872947386, 0.12546768756682242),
    (0.037109375, 0.0, 0.0, 0.17025221101954405, 0.06021653898045596, -0.017578125),
    (
        0.03709200011850479, 0.0, 0.0, 0.17038392571223998, 0.10726203044637328,
        -0.015319437748624402, 0.008273789163814023,
    ),
    (
        0.6241109587160757, 0.0, 0.0, -3.3608926294469414, -0.868219346841726,
        27.59209969944671, 20.154067550477894, -43.48988418106996,
    ),
    (
        0.47766253643826434, 0.0, 0.0, -2.4881146199716677, -0.590290826836843,
        21.230051448181193, 15.279233632882423, -33.28821096898486, -0.020331201708508627,
    ),
    (
        -0.9371424300859873, 0.0, 0.0, 5.186372428844064, 1.0914373489967295,
        -8.149787010746927, -18.52006565999696, 22.739487099350505, 2.4936055526796523,
        -3.0467644718982196,
    ),
    (
        2.273310147516538, 0.0, 0.0, -10.53449546673725, -2.0008720582248625,
        -17.9589318631188, 27.94888452941996, -2.8589982771350235, -8.87285693353063,
        12.360567175794303, 0.6433927460157636,
    ),
)  # fmt: skip
_DOP853_B = (
    0.054293734116568765, 0.0, 0.0, 0.0, 0.0, 4.450312892752409, 1.8915178993145003,
    -5.801203960010585, 0.3111643669578199, -0.1521609496625161, 0.20136540080403034,
    0.04471061572777259, 0.0,
)  # fmt: skip
_DOP853_E5 = (
    0.01312004499419488, 0.0, 0.0, 0.0, 0.0, -1.2251564463762044, -0.4957589496572502,
    1.6643771824549864, -0.35032884874997366, 0.3341791187130175, 0.08192320648511571,
    -0.022355307863886294, 0.0,
)  # fmt: skip
_DOP853 = ButcherTableau(
    "dopri8",
    (
        0.0, 0.05260015195876773, 0.0789002279381516, 0.1183503419072274, 0.2816496580927726,
        1 / 3, 0.25, 4 / 13, 0.6512820512820513, 0.6, 6 / 7, 1.0, 1.0,
    ),
    _DOP853_A + (_DOP853_B[:12],),
    _DOP853_B,
    8,
    _DOP853_E5,
    5,
)  # fmt: skip

TABLEAUS: dict[str, ButcherTableau] = {
    "euler": _fixed("euler", (0,), ((),), (1,), 1),
    "midpoint": _fixed("midpoint", (0, 1 / 2), ((), (1 / 2,)), (0, 1), 2),
    "rk4": _fixed(
        "rk4",
        (0, 1 / 3, 2 / 3, 1),
        ((), (1 / 3,), (-1 / 3, 1), (1, -1, 1)),
        (1 / 8, 3 / 8, 3 / 8, 1 / 8),
        4,
    ),
    "rk4_classic": _fixed(
        "rk4_classic",
        (0, 1 / 2, 1 / 2, 1),
        ((), (1 / 2,), (0, 1 / 2), (0, 0, 1)),
        (1 / 6, 1 / 3, 1 / 3, 1 / 6),
        4,
    ),
    "heun2": _fixed("heun2", (0, 1), ((), (1,)), (1 / 2, 1 / 2), 2),
    "heun3": _fixed("heun3", (0, 1 / 3, 2 / 3), ((), (1 / 3,), (0, 2 / 3)), (1 / 4, 0, 3 / 4), 3),
    # Heun 2 with Euler embedded; the last stage f(t + h, y + h k1) starts the next step
    "adaptive_heun": _pair(
        "adaptive_heun", (0, 1), ((), (1,)), (1 / 2, 1 / 2), (1, 0), 2, 1, reuse_last=True
    ),
    # RKF1(2): the third stage is f at the first-order solution, reused as the next first stage
    "fehlberg2": _pair(
        "fehlberg2",
        (0, 1 / 2, 1),
        ((), (1 / 2,), (1 / 256, 255 / 256)),
        (1 / 512, 255 / 256, 1 / 512),
        (1 / 256, 255 / 256, 0),
        2,
        1,
        reuse_last=True,
    ),
    "bosh3": _BOSH3,
    "dopri5": _DOPRI5,
    "tsit5": _TSIT5,
    "dopri8": _DOP853,
}


def get_tableau(method: str | ButcherTableau) -> ButcherTableau:
    """The tableau of ``method`` (a name in ``TABLEAUS`` or a tableau); ValueError otherwise."""
    if isinstance(method, ButcherTableau):
        return method
    try:
        return TABLEAUS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown method {method!r}; available: {', '.join(sorted(TABLEAUS))}"
        ) from None
