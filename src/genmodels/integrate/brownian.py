"""Brownian motion (the Wiener process) as a reproducible, queryable object.

The lecture (section 5, "Brownian motion") defines the Wiener process with parameter
σ² as a process W(t), t ≥ t0, with

1. W(t0) = 0,
2. E[W(t)] = 0,
3. stationary independent increments,
4. W(t) - W(s) ~ N(0, σ² (t - s)) for s < t,

and notes that it is a Markov process. :class:`BrownianMotion` is one sample path of
that process (a batch of independent paths, really), that can be queried at any time
or over any interval, in any order, forwards or backwards, and always returns values
of the *same* path: the path is a deterministic function of ``seed``.

How: a *virtual Brownian tree* (Li et al. 2020, "Scalable gradients for stochastic
differential equations", §4; the Brownian interval of Kidger et al. 2021, "Efficient
and accurate gradients for neural SDEs", is the same idea with a query-shaped tree).
The interval [t0, t1] is split dyadically. Each node of the tree owns a seed; the
seed of a child is a hash of its parent's seed and its side (a *splittable* seed, as
JAX's keys). Knowing W at both ends of a node (and the node's space-time Lévy area,
below), the values at its midpoint are drawn from the exact conditional law (the
Brownian bridge) with the node's own seed. A query at time t walks from the root to
the node whose end point is t, or down to a node narrower than ``tol`` and then takes
the conditional mean inside it. Nothing depends on the order of queries; what is stored
only saves work: an LRU cache of recently split nodes, the path from the root of the last
query (the next query starts from the deepest node of it that holds its time strictly
inside, where a walk from the root would pass anyway), and the last few answers (a sweep
over a grid asks each time twice). A sweep's cost is then the normals themselves: one draw
of ``size`` normals per new node, about log2(spacing / tol) new nodes per query.

With ``levy_area=True`` the tree also carries the running time integral
I(t) = ∫_{t0}^t W(s) ds, so it also answers the *space-time Lévy area* that stochastic
Runge–Kutta methods of strong order 1.5 need (Rößler 2010): for ta < tb, h = tb - ta,

    U(ta, tb) = ∫_ta^tb (W(s) - W(ta)) ds,      H = U / h - (W(tb) - W(ta)) / 2,

with H ~ N(0, σ² h / 12) independent of the increment. Splitting an interval of
length h at its midpoint given (W, H) of the whole (Foster 2020, "Numerical
approximation of SDEs and the stochastic Taylor expansion", thesis; derived again in
``_split`` below):

    W_left  = W / 2 + 3 H / 2 + σ √(h/16) Z₁
    H_left  = (C + B) / 2,  H_right = (C - B) / 2,
    C = 2 H - (W_left - W / 2),  B = σ √(h/12) Z₂,     Z₁, Z₂ ~ N(0, 1) independent.

Marginally W_left | W is the Brownian bridge midpoint N(W/2, σ² h / 4).
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BrownianMotion", "ForwardBrownian"]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


_State = tuple[Tensor, Tensor, Tensor, Tensor]  # W(a), W(b), I(a), H(a, b) of a tree node


def _mix64(z: int) -> int:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijective 64-bit scrambler."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
    return z ^ (z >> 31)


def _child_seed(seed: int, side: int) -> int:
    """Seed of the left (side 0) or right (side 1) child of a tree node."""
    return _mix64((seed + (2 * side + 1) * _GOLDEN) & _MASK64)


def _torch_seed(seed: int) -> int:
    # torch.Generator.manual_seed accepts up to 2**64 - 1 on CPU; keep within int64 to be safe
    return seed & ((1 << 63) - 1)


class BrownianMotion:
    """A batch of Wiener-process paths on [t0, t1], queryable at any time, reproducibly.

    ``bm(t)`` returns W(t) (with W(t0) = 0); ``bm(ta, tb)`` returns the increment
    W(tb) - W(ta), the protocol of torchsde's ``BrownianInterval``/``BrownianTree``;
    ``bm(ta, tb, return_U=True)`` also returns U = ∫_ta^tb (W(s) - W(ta)) ds (with
    ``levy_area=True``).

    Each of the ``size`` coordinates is an independent path with

        W(t0) = 0,   W(t) - W(s) ~ N(0, σ² (t - s)),   independent over disjoint intervals.

    Values are exact (samples of the true joint law) at every time of the dyadic
    grid t0 + k (t1 - t0) / 2^j down to ``tol``; between the nodes of a leaf narrower
    than ``tol`` the path is the conditional mean given the leaf's end values (and Lévy
    area): linear, or quadratic with Lévy area; error standard deviation below σ √tol / 2.
    A grid such as ``torch.linspace(t0, t1, 2**k + 1)`` is therefore sampled exactly.

    Args:
        t0, t1: the time interval, t0 < t1 (Python floats; queries outside raise).
        size: batch shape of the process, e.g. ``(batch, channels)``; ``()`` for one path.
        sigma: σ, the scale (the lecture's parameter is σ²; σ = 1 is standard).
        seed: an integer; the same seed gives the same path. Default: drawn from
            ``generator`` (or from torch's global generator when that is None too).
        generator: used only to draw ``seed`` when it is not given.
        dtype, device: of returned values (default float32 / CPU). The tree itself is
            computed in float64 (float32 on MPS) so that tiny increments are accurate.
        tol: width below which nodes are not split further. Default (t1 - t0) * 2**-20
            (interpolation error below 5e-4 σ √(t1 - t0)); smaller is exact to finer
            scales, larger is faster on non-dyadic queries (fewer levels).
        cache_size: number of split nodes kept (LRU); memory: per node one tensor of
            ``size`` (W only), up to six with Lévy area; plus the last query's path.
        levy_area: also carry the space-time Lévy area, so that ``return_U=True`` works (as
            ``srk`` needs). Off by default, like torchsde's ``levy_area_approximation="none"``:
            a W-only tree draws half the normals and does a third of the arithmetic. The two
            modes give different (equally valid) paths for the same seed.

    Example:
        >>> bm = BrownianMotion(0.0, 1.0, size=(3,), seed=0)
        >>> bm(0.0)
        tensor([0., 0., 0.])
        >>> w = bm(0.25, 0.5)                       # W(0.5) - W(0.25), shape (3,)
        >>> torch.allclose(w, bm(0.5) - bm(0.25))   # same path, any query order
        True
    """

    def __init__(
        self,
        t0: float = 0.0,
        t1: float = 1.0,
        size: Sequence[int] | torch.Size = (),
        *,
        sigma: float = 1.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        tol: float | None = None,
        cache_size: int = 128,
        levy_area: bool = False,
    ) -> None:
        t0, t1 = float(t0), float(t1)
        if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
            raise ValueError(f"BrownianMotion: need finite t0 < t1, got t0={t0}, t1={t1}")
        sigma = float(sigma)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"BrownianMotion: sigma must be positive and finite, got {sigma}")
        if isinstance(size, int):
            size = (size,)
        size = torch.Size(size)
        if any(s < 0 for s in size):
            raise ValueError(f"BrownianMotion: size must be non-negative, got {tuple(size)}")
        if cache_size < 1:
            raise ValueError(f"BrownianMotion: cache_size must be >= 1, got {cache_size}")
        self._t0, self._t1, self._length = t0, t1, t1 - t0
        self._tol = float(tol) if tol is not None else self._length * 2.0**-20
        if not self._tol > 0:
            raise ValueError(f"BrownianMotion: tol must be positive, got {tol}")
        self._sigma = sigma
        self._levy = bool(levy_area)
        self._size = size
        self._dtype = dtype if dtype is not None else torch.get_default_dtype()
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._tree_dtype = torch.float32 if self._device.type == "mps" else torch.float64
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
        self._seed = int(seed) & _MASK64
        self._gen = torch.Generator(device=self._device)
        # A node's state: W(a), W(b), I(a), H(a, b), each of shape size.
        self._cache: OrderedDict[tuple[int, int], list] = OrderedDict()
        self._cache_size = int(cache_size)
        # root: W(t0) = 0, I(t0) = 0; W(t1) ~ N(0, σ² L), H ~ N(0, σ² L / 12) independent
        z = self._normal(_mix64(self._seed)).to(self._tree_dtype)
        sd = sigma * math.sqrt(self._length)
        zero = torch.zeros(size, dtype=self._tree_dtype, device=self._device)
        if self._levy:
            self._root = (zero, sd * z[0], zero, sd / math.sqrt(12.0) * z[1])
        else:
            self._root = (zero, sd * z[0])
        # The path from the root to the node reached by the last query, one entry per level:
        # [a, b, state, seed, level, index, children or None]. A new query resumes from the
        # deepest node on it that holds t strictly inside (see _query).
        self._stack: list[list] = [[t0, t1, self._root, self._seed, 0, 0, None]]
        # the last four answers of _query, by time (a grid sweep asks each time twice, a
        # step-doubling attempt each of its three times twice)
        self._memo: list[tuple[float, tuple[Tensor, Tensor | None]]] = []

    # --- torchsde's Brownian protocol -------------------------------------------------------
    @property
    def shape(self) -> torch.Size:
        """Batch shape of the process (torchsde calls it ``shape``)."""
        return self._size

    def size(self) -> torch.Size:
        return self._size

    @property
    def levy_area_approximation(self) -> str:
        """torchsde's attribute: "space-time" with ``levy_area=True``, else "none"."""
        return "space-time" if self._levy else "none"

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def t0(self) -> float:
        return self._t0

    @property
    def t1(self) -> float:
        return self._t1

    @property
    def sigma(self) -> float:
        return self._sigma

    @property
    def seed(self) -> int:
        return self._seed

    def __repr__(self) -> str:
        return (
            f"BrownianMotion(t0={self._t0}, t1={self._t1}, size={tuple(self._size)}, "
            f"sigma={self._sigma}, seed={self._seed}, dtype={self._dtype}, device={self._device})"
        )

    def __call__(
        self,
        ta: float | Tensor,
        tb: float | Tensor | None = None,
        return_U: bool = False,
        return_A: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """W(ta) when ``tb`` is None, else the increment W(tb) - W(ta).

        With ``return_U`` also U = ∫_ta^tb (W(s) - W(ta)) ds (torchsde's name; with ``tb``
        None, over [t0, ta]). Shapes: ``self.shape`` each. ``return_A`` (Lévy area between
        channels) is not provided.
        """
        if return_A:
            raise NotImplementedError("BrownianMotion: Lévy area between channels (return_A)")
        if return_U and not self._levy:
            raise ValueError(
                "BrownianMotion: return_U needs the space-time Lévy area; create it with "
                "BrownianMotion(..., levy_area=True)"
            )
        if tb is None:
            ta, tb = self._t0, ta
        ta, tb = self._check_time(ta, "ta"), self._check_time(tb, "tb")
        wa, ia = self._query(ta)
        wb, ib = self._query(tb)
        w = (wb - wa).to(self._dtype)
        if not return_U:
            return w
        u = (ib - ia - (tb - ta) * wa).to(self._dtype)
        return w, u

    def path(self, ts: Tensor | Sequence[float]) -> Tensor:
        """W at each of ``ts``: shape ``(len(ts), *size)``.

        >>> BrownianMotion(size=(2,), seed=1).path(torch.linspace(0, 1, 5)).shape
        torch.Size([5, 2])
        """
        ts = [float(t) for t in (ts.tolist() if isinstance(ts, Tensor) else ts)]
        out = [self._query(self._check_time(t, "ts"))[0] for t in ts]
        if not out:
            return torch.empty((0, *self._size), dtype=self._dtype, device=self._device)
        return torch.stack(out).to(self._dtype)

    # --- the tree -----------------------------------------------------------------------------
    def _check_time(self, t: float | Tensor, name: str) -> float:
        t = float(t)
        if not (self._t0 <= t <= self._t1):
            raise ValueError(
                f"BrownianMotion: {name}={t} outside the interval [t0, t1] = "
                f"[{self._t0}, {self._t1}]"
            )
        return t

    def _normal(self, seed: int) -> Tensor:
        """The node's standard normals, shape (1 or 2, *size), in float32: drawn in float32
        (4x faster on CPU than float64), so the path does not depend on the requested dtype.
        The tree's arithmetic is float64; widening float32 to float64 is exact, so a normal
        used once may enter it through a mixed-dtype op (no copy), with the same result."""
        self._gen.manual_seed(_torch_seed(seed))
        return torch.randn(
            (2 if self._levy else 1, *self._size),
            generator=self._gen,
            dtype=torch.float32,
            device=self._device,
        )

    def _split(self, level: int, seed: int, state: _State) -> list:
        """The children of a node at ``level`` with ``state``: ``[left, right]`` states, or,
        with Lévy area, ``[None, None, pending]``: the parts both children share are
        computed here, each child's own parts only when a walk first enters it
        (:meth:`_child`; a sweep over a grid enters one side of most deep nodes only).

        With h the node's width, s = σ√h, k = s/√12 and m = (a + b)/2 (derivation: σ = 1,
        halves of width h/2 have independent (W_i, H_i), W_i ~ N(0, h/2), H_i ~ N(0, h/24);
        I = I₁ + I₂ + (h/2) W₁ gives H₁ + H₂ + (W₁ - W₂)/2 = 2H; with A = W₁ - W₂ ⟂ W₁ + W₂
        and C = H₁ + H₂ ⟂ B = H₁ - H₂, conditioning on C + A/2 = 2H gives
        A/2 ~ N(3H/2, h/16), C = 2H - A/2, B ~ N(0, h/12)):

            W(m) = (W(a) + W(b))/2 + 3H/2 + (s/4) Z₁
            H(a, m) = H/4 - (s/8) Z₁ + (k/2) Z₂,    H(m, b) = H/4 - (s/8) Z₁ - (k/2) Z₂
            I(m) = I(a) + (3h/8) W(a) + (h/8) W(b) + (h/2) H + (h k/4) Z₂
        """
        h = self._length / 2.0**level
        s = self._sigma * math.sqrt(h)
        if not self._levy:  # the Brownian bridge midpoint: N((W(a) + W(b))/2, σ² h/4)
            wa, wb = state
            wm = torch.add(wa, wb).mul_(0.5).add_(self._normal(seed)[0], alpha=0.5 * s)
            return [(wa, wm), (wm, wb)]
        k = s / math.sqrt(12.0)
        z1, z2 = self._normal(seed).to(self._tree_dtype)  # each used twice: widen once
        wa, wb, ia, hh = state
        wm = torch.add(wa, wb).mul_(0.5).add_(hh, alpha=1.5).add_(z1, alpha=0.25 * s)
        c = torch.add(hh, z1, alpha=-0.5 * s).mul_(0.25)
        return [None, None, (h, k, z2, c, wm, state)]

    @staticmethod
    def _child(children: list, side: int) -> _State:
        """Child ``side`` of a split (Lévy area): H(a, m) or H(m, b) and I(m), see _split."""
        h, k, z2, c, wm, (wa, wb, ia, hh) = children[2]
        if side == 0:
            child = (wa, wm, ia, torch.add(c, z2, alpha=0.5 * k))
        else:
            im = torch.add(ia, wa, alpha=0.375 * h).add_(wb, alpha=0.125 * h)
            im = im.add_(hh, alpha=0.5 * h).add_(z2, alpha=0.25 * h * k)
            child = (wm, wb, im, torch.add(c, z2, alpha=-0.5 * k))
        children[side] = child
        return child

    def _query(self, t: float) -> tuple[Tensor, Tensor | None]:
        """(W(t), I(t)) in the tree dtype, I(t) = ∫_{t0}^t W(s) ds (None without Lévy area).

        The walk from the root stops at the first node that has t as an end point, or at a
        leaf narrower than ``tol``. Every node it passes before that holds t strictly
        inside, so a walk may start at the deepest node of the previous walk's path
        (``self._stack``) that holds t strictly inside: it goes on exactly as a walk from the
        root would, and returns the same tensors. Sequential queries thus only walk the
        levels below the node their times share.
        """
        for tm, res in self._memo:
            if tm == t:
                return res
        stack = self._stack
        while len(stack) > 1 and not (stack[-1][0] < t < stack[-1][1]):
            stack.pop()
        a, b, state, seed, level, index, children = stack[-1]
        t0, length, levy, tol = self._t0, self._length, self._levy, self._tol
        cache = self._cache
        while True:
            if t == a:
                res = state[0], (state[2] if levy else None)
                break
            h = b - a
            if t == b:
                res = state[1], (self._integral_at(h, h, state) if levy else None)
                break
            if h <= tol:
                res = self._interpolate(t - a, h, state)
                break
            if children is None:
                key = (level, index)
                children = cache.get(key)
                if children is None:
                    children = self._split(level, seed, state)
                    cache[key] = children
                    if len(cache) > self._cache_size:
                        cache.popitem(last=False)
                else:
                    cache.move_to_end(key)
                stack[-1][6] = children
            level += 1
            mid = t0 + length * ((2 * index + 1) / 2.0**level)
            side = 0 if t < mid else 1
            if side == 0:
                b = mid
            else:
                a = mid
            state = children[side]
            if state is None:
                state = self._child(children, side)
            seed = _child_seed(seed, side)
            index = 2 * index + side
            children = None
            stack.append([a, b, state, seed, level, index, None])
        memo = self._memo
        memo.append((t, res))
        if len(memo) > 4:
            del memo[0]
        return res

    @staticmethod
    def _integral_at(tau: float, h: float, state: _State) -> Tensor:
        """I(a + τ) from the conditional mean of W inside the node (exact at τ = h)."""
        wa, wb, ia, hh = state
        r = tau / h
        # ∫_0^τ [W(a) + (u/h) w + 6 u (h - u)/h² H] du, w = W(b) - W(a)
        return ia + tau * wa + (0.5 * tau * r) * (wb - wa) + (6.0 * tau * r * (0.5 - r / 3.0)) * hh

    def _interpolate(self, tau: float, h: float, state: _State) -> tuple[Tensor, Tensor | None]:
        """Conditional mean inside a leaf: E[W(a+τ) - W(a) | W, H] = (τ/h) W + 6 τ (h-τ)/h² H,
        or (τ/h) W without Lévy area.

        (Cov(B(τ), ∫B) = τ (h - τ)/2 for the Brownian bridge B, Var(∫B) = h³/12.)
        """
        r = tau / h
        if not self._levy:
            wa, wb = state
            return torch.lerp(wa, wb, r), None
        wa, wb, _, hh = state
        w_tau = wa + r * (wb - wa) + (6.0 * r * (1.0 - r)) * hh
        return w_tau, self._integral_at(tau, h, state)


class ForwardBrownian:
    """One Brownian path drawn on the fly at the times it is asked for, forward in time only:
    what an adaptive solver without a given ``bm`` needs (step doubling asks for the end and
    the midpoint of each attempted step, and after a rejection for times in between).

    It keeps the points t_now = t_0 < t_1 < ... drawn so far at and to the right of the
    current time ``t_now``, with W(t_k) - W(t_now) and, with ``levy_area=True``, the running
    area I(t_k) = ∫_{t_now}^{t_k} (W(s) - W(t_now)) ds. A value at a new time s

    - past the last known point a: W(s) - W(a) ~ N(0, σ² d), d = s - a (with Lévy area, the
      pair (w, U), U = ∫_a^s (W - W(a)) ds, has Var w = σ² d, Cov(w, U) = σ² d²/2,
      Var U = σ² d³/3: U = d w / 2 + σ √(d³/12) Z₂);
    - between two known points a < s < b: the Brownian bridge, W(s) | W(a), W(b) ~
      N(W(a) + r w, σ² h r q), h = b - a, r = (s - a)/h, q = 1 - r, w = W(b) - W(a). With
      Lévy area, (w_s, U_s) = (W(s) - W(a), ∫_a^s (W - W(a))) given (w, U) over [a, b] is
      Gaussian (conditioning the joint law of (w_s, U_s, w, U), whose covariances follow
      from Cov(W_u, W_v) = min(u, v)); in units σ = h = 1:

          E[w_s] = r (3r - 2) w + 6 r q U,        E[U_s] = -r² q w + r² (3 - 2r) U,
          Var w_s = r q (1 - 3 r q),  Cov(w_s, U_s) = r² q² (1 - 2r) / 2,  Var U_s = r³ q³ / 3

      (w scales as σ √h, U as σ h^(3/2)), sampled with the 2 × 2 Cholesky factor.

    Each new point costs one draw of ``size`` normals (two with Lévy area) and two or three
    tensor operations; a known time returns its stored value (repeated queries agree). Every
    value is drawn from its exact conditional law given all values drawn before, so the path
    is a Brownian motion whatever the order of the queries, also when the times depend on the
    values drawn so far (as an adaptive solver's do). By the Markov property of (W, I), the
    values left of t_now do not change the law of the future given W(t_now), so
    :meth:`advance` forgets them and re-expresses the rest relative to the new t_now: the
    stored values are increments over the current window, accurate in the state's own dtype
    (no float64 copy of an absolute path). A query before t_now is an error.

    Unlike :class:`BrownianMotion`, the path depends on the order of the queries and on
    ``generator``'s state, not on a seed: the same generator state and the same sequence of
    queries give the same path. The normals are drawn in float32 (several times faster than
    float64 on CPU) and widened exactly for a float64 path, as :class:`BrownianMotion` does
    (in the path's dtype when that is narrower).

    Args:
        t0: the start time; W(t0) = 0.
        size: batch shape of the process.
        sigma: σ.
        levy_area: also carry the area, so that ``return_U=True`` works.
        dtype, device: of the path and of returned values (default: torch's default dtype,
            CPU).
        generator: the source of the normals (torch's global generator when None).

    Example:
        >>> path = ForwardBrownian(0.0, (3,), generator=torch.Generator().manual_seed(0))
        >>> w = path(0.0, 0.5)                            # an increment past the last point
        >>> torch.equal(path(0.0, 0.25) + path(0.25, 0.5), w)   # a bridge point in between
        True
        >>> path.advance(0.25)                            # forget [0, 0.25)
        >>> path.t_now
        0.25
    """

    def __init__(
        self,
        t0: float,
        size: Sequence[int] | torch.Size | int,
        *,
        sigma: float = 1.0,
        levy_area: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        t0 = float(t0)
        if not math.isfinite(t0):
            raise ValueError(f"ForwardBrownian: t0 must be finite, got {t0}")
        sigma = float(sigma)
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"ForwardBrownian: sigma must be positive and finite, got {sigma}")
        self._size = torch.Size((size,) if isinstance(size, int) else size)
        if any(n < 0 for n in self._size):
            raise ValueError(f"ForwardBrownian: size must be non-negative, got {tuple(size)}")
        self._sigma = sigma
        self._levy = bool(levy_area)
        self._dtype = dtype if dtype is not None else torch.get_default_dtype()
        if not self._dtype.is_floating_point:
            raise TypeError(f"ForwardBrownian: dtype must be a floating type, got {self._dtype}")
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._gen = generator
        wide = self._dtype in (torch.float32, torch.float64)
        self._normal_dtype = torch.float32 if wide else self._dtype
        zero = torch.zeros(self._size, dtype=self._dtype, device=self._device)
        self._zero = zero  # W(t_now) and I(t_now), shared (never modified in place)
        # the known points at and right of t_now, sorted: times, W - W(t_now), and
        # ∫_{t_now} (W - W(t_now)) (Lévy area only; else the same tensors as W, unused)
        self._ts: list[float] = [t0]
        self._w: list[Tensor] = [zero]
        self._i: list[Tensor] = [zero]

    @property
    def shape(self) -> torch.Size:
        """Batch shape of the process (torchsde's name)."""
        return self._size

    @property
    def levy_area_approximation(self) -> str:
        """torchsde's attribute: "space-time" with ``levy_area=True``, else "none"."""
        return "space-time" if self._levy else "none"

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def t_now(self) -> float:
        """The earliest time that may still be queried."""
        return self._ts[0]

    def __len__(self) -> int:
        """The number of points kept (t_now included)."""
        return len(self._ts)

    def advance(self, t: float) -> None:
        """Make ``t`` (a drawn time) the new t_now: forget the points before it and express
        the values after it relative to W(t) (and the area from t)."""
        t = float(t)
        k = bisect.bisect_left(self._ts, t)
        if k == len(self._ts) or self._ts[k] != t:
            raise ValueError(f"ForwardBrownian.advance: {t} is not a drawn time")
        if k == 0:
            return
        ts, ws, its = self._ts[k:], self._w[k:], self._i[k:]
        wk, ik = ws[0], its[0]
        for j in range(1, len(ts)):  # usually none: the accepted end is the last point
            w = ws[j] - wk
            if self._levy:
                its[j] = torch.sub(its[j], ik).sub_(wk, alpha=ts[j] - t)
                ws[j] = w
            else:
                ws[j] = its[j] = w
        ws[0] = its[0] = self._zero
        self._ts, self._w, self._i = ts, ws, its

    def __call__(
        self, ta: float, tb: float, return_U: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """W(tb) - W(ta) for t_now <= ta <= tb; with ``return_U`` also
        U = ∫_ta^tb (W(s) - W(ta)) ds (torchsde's protocol). New tensors each call."""
        if return_U and not self._levy:
            raise ValueError("ForwardBrownian: return_U needs levy_area=True")
        ta, tb = float(ta), float(tb)
        if not ta <= tb:
            raise ValueError(f"ForwardBrownian: need ta <= tb, got ta={ta}, tb={tb}")
        wa, ia = self._at(ta)
        wb, ib = self._at(tb)
        w = wb - wa
        if not return_U:
            return w
        return w, torch.sub(ib, ia).sub_(wa, alpha=tb - ta)

    def _increment(self, ta: float, tb: float) -> Tensor:
        """W(tb) - W(ta) as ``self(ta, tb)`` (the same draws, the same values) for the adaptive
        solver, which reads it only: from t_now, where W is 0, it is the stored W(tb) itself
        (not a copy; w - 0 = w exactly), so it must not be modified in place."""
        if ta == self._ts[0]:
            return self._at(tb)[0]
        wa = self._at(ta)[0]
        return self._at(tb)[0] - wa

    def _doubling(self, ta: float, tm: float, tb: float) -> tuple[Tensor, Tensor, Tensor]:
        """(W(tb) - W(ta), W(tm) - W(ta), W(tb) - W(tm)), a step-doubling attempt's increments:
        ``_increment`` of the three intervals in this order (the same draws, the same
        values), read only."""
        if ta != self._ts[0]:
            return self._increment(ta, tb), self._increment(ta, tm), self._increment(tm, tb)
        wb = self._at(tb)[0]
        wm = self._at(tm)[0]
        return wb, wm, wb - wm

    def _normal(self) -> tuple[Tensor, Tensor | None]:
        """One draw of normals for a new point: Z₁ (and Z₂ with Lévy area), float32 where
        the path is float32 or float64 (widened exactly where they are used)."""
        if not self._levy:  # the same numbers as the first row of a (1, *size) draw
            return torch.randn(
                self._size, generator=self._gen, dtype=self._normal_dtype, device=self._device
            ), None
        z = torch.randn(
            (2, *self._size), generator=self._gen, dtype=self._normal_dtype, device=self._device
        )
        return z[0], z[1]

    def _at(self, s: float) -> tuple[Tensor, Tensor]:
        """(W(s), I(s)) relative to t_now: the stored values, or new ones drawn and stored."""
        ts = self._ts
        k = bisect.bisect_left(ts, s)
        if k < len(ts) and ts[k] == s:
            return self._w[k], self._i[k]
        if k == 0:
            raise ValueError(
                f"ForwardBrownian: time {s} is before t_now = {ts[0]} (the path only moves forward)"
            )
        sig = self._sigma
        z0, z1 = self._normal()
        wa, ia, a = self._w[k - 1], self._i[k - 1], ts[k - 1]
        if k == len(ts):  # past the last point: a Gaussian increment (and its area)
            d = s - a
            w = z0 if z0.dtype == self._dtype else z0.to(self._dtype)
            w = w.mul_(sig * math.sqrt(d))
            ws = w if k == 1 else w + wa  # W(t_now) = 0: w + 0 is w
            if self._levy:  # I(s) = I(a) + d (W(a) - W(t_now)) + d w / 2 + σ √(d³/12) Z₂
                i_s = torch.add(ia, wa, alpha=d).add_(w, alpha=0.5 * d)
                i_s = i_s.add_(z1, alpha=sig * math.sqrt(d**3 / 12.0))
            else:
                i_s = ws
        else:  # between a and b: the bridge
            b = ts[k]
            h = b - a
            r, q = (s - a) / h, (b - s) / h
            wb, ib = self._w[k], self._i[k]
            if not self._levy:
                ws = torch.lerp(wa, wb, r).add_(z0, alpha=sig * math.sqrt(h * r * q))
                i_s = ws
            else:
                w = wb - wa
                u = torch.sub(ib, ia).sub_(wa, alpha=h)  # U over [a, b]
                l11 = math.sqrt(r * q * (1.0 - 3.0 * r * q))
                l21 = r * r * q * q * (1.0 - 2.0 * r) / (2.0 * l11)
                l22 = math.sqrt(max(r**3 * q**3 / 3.0 - l21 * l21, 0.0))
                sh = sig * math.sqrt(h)
                ws = torch.add(wa, w, alpha=r * (3.0 * r - 2.0)).add_(u, alpha=6.0 * r * q / h)
                ws = ws.add_(z0, alpha=sh * l11)
                us = torch.mul(w, -r * r * q * h).add_(u, alpha=r * r * (3.0 - 2.0 * r))
                us = us.add_(z0, alpha=sh * h * l21).add_(z1, alpha=sh * h * l22)
                i_s = us.add_(ia).add_(wa, alpha=s - a)
        ts.insert(k, s)
        self._w.insert(k, ws)
        self._i.insert(k, i_s)
        return ws, i_s
