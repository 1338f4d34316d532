"""Continuous normalizing flows: the lecture's planar CNF and FFJORD (lecture section 4).

The instantaneous change of variables (Chen, Rubanova, Bettencourt & Duvenaud 2018, "Neural
Ordinary Differential Equations", theorem 1)::

    dz/dt = f(z(t), t),        d log p(z(t))/dt = -tr(∂f/∂z(t))

solved as one augmented ODE for ``[z, l]`` with ``dl/dt = tr(∂f/∂z)``.  :class:`CNF` is a
:class:`~genmodels.distributions.Transform` like every coupling layer: ``forward`` maps data
``x = z(0)`` to the base point ``z(T)`` and returns ``log|det ∂z(T)/∂x| = l(T) =
∫_0^T tr(∂f/∂z) dt`` with it, so ``log p(x) = log N(z(T); 0, I) + l(T)``; ``inverse`` solves
from ``T`` back to 0 (sampling).  Inside :class:`~genmodels.distributions.Flow` and
:class:`~genmodels.models.flows.FlowModel`, ``log_prob``, ``sample``, ``rsample`` and
``distribution()`` mean what they mean for the coupling flows.

The trace ``tr(∂f/∂z)`` comes from :mod:`genmodels.integrate.trace` (one home for CNFs and the
probability flow ODE):

- ``"exact"``: D vector-Jacobian products (the default, and what ``log_prob`` uses under
  ``torch.no_grad()`` for D <= ``exact_dims``: evaluation reports the exact likelihood); for
  :class:`ConcatField` with ``concat`` layers the same numbers come from one fused autograd
  node instead (:meth:`ConcatField.with_divergence`: forward-mode tangents of the D input
  directions and a hand-written backward; see ``_FusedConcatMLP``);
- ``"hutchinson"``: FFJORD's unbiased ``εᵀ(∂f/∂z)ε`` (Grathwohl et al. 2019, "FFJORD",
  section 3.1), Rademacher or Gaussian ε drawn ONCE per solve from the caller's generator,
  so that the solve sees one deterministic vector field;
- ``"field"``: the field gives its own divergence in closed form (:class:`PlanarField`).

Models:

- ``ffjord``: an MLP field ``f(z, t)`` (the time features ``(cos πt/T, sin πt/T)`` concatenated to
  every hidden layer's input, as FFJORD's ``concat`` layers concatenate ``t``; ELU), exact
  trace in 2D by default; the activation, the layer
  type and the time features (``t`` itself or Fourier pairs, at every layer or only the
  first, as zuko's CNF) are options of its config.
- ``planar-cnf``: the lecture's planar CNF (Chen et al. 2018, section 4)::

      dz/dt      = Σ_m u_m(t) h(w_m(t)ᵀ z + b_m(t))
      d log p/dt = -Σ_m h'(w_m(t)ᵀ z + b_m(t)) u_m(t)ᵀ w_m(t)

  with ``h = tanh`` and ``(u_m, w_m, b_m)`` from a small hypernetwork of ``t`` (several units
  summed, as in the paper; the paper also gates ``u`` with a sigmoid of ``t``'s network,
  included here).

Example::

    >>> from genmodels.registry import DataInfo
    >>> model = build_ffjord(FFJORDConfig(hidden=16), DataInfo("8gaussians", "points", (2,)))
    >>> model.init_from_data(torch.randn(100, 2))
    >>> model.log_prob(torch.zeros(3, 2)).shape
    torch.Size([3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..distributions import Standardize, Transform, standard_normal_log_prob
from ..integrate import (
    check_times,
    dynamics_with_divergence,
    hutchinson_noise,
    odeint,
    odeint_adjoint,
)
from ..integrate.trace import NOISE_KINDS
from ..registry import DataInfo, register
from .flows import FlowModel

__all__ = [
    "LAYERS",
    "TIME_INPUTS",
    "time_features",
    "CNF",
    "ConcatField",
    "PlanarField",
    "CNFModel",
    "FFJORDConfig",
    "PlanarCNFConfig",
    "build_ffjord",
    "build_planar_cnf",
    "TRACES",
]

TRACES = ("exact", "hutchinson", "field")
ACTIVATIONS = {"tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


LAYERS = ("concat", "concatsquash")
TIME_INPUTS = ("every", "first")


def time_features(t: Tensor, freqs: int, T: float, dtype: torch.dtype) -> Tensor:
    """What a field's layers see of ``t``: ``(1, 1)`` ``[t]`` for ``freqs = 0``, else the
    ``(1, 2 freqs)`` Fourier features ``[cos(π j t / T), sin(π j t / T)]``, ``j = 1..freqs``.

    The Fourier form is zuko's CNF time embedding (``freqs`` multiples of π on ``[0, 1]``)
    with the period tied to the flow's end time ``T``; with ``j = 1`` alone, ``t ↦ (cos, sin)``
    is already one-to-one on ``[0, T]``, higher ``j`` let the field change faster along ``t``.
    """
    tt = (t if t.dtype == dtype else t.to(dtype)).reshape(1, 1)
    if freqs == 0:
        return tt
    if freqs == 1:  # the same numbers as the general form below (tt * 1 is exact)
        angle = tt * (math.pi / T)
    else:
        angle = tt * torch.arange(1, freqs + 1, dtype=dtype, device=tt.device) * (math.pi / T)
    return torch.cat([angle.cos(), angle.sin()], 1)


def _check_field_options(activation, layer, time_freqs, time_input) -> None:
    """The :class:`ConcatField` options (shared by the field and ``FFJORDConfig.validate``)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
    if isinstance(time_freqs, bool) or not isinstance(time_freqs, int) or time_freqs < 0:
        raise ValueError(f"time_freqs must be an int >= 0, got {time_freqs!r}")
    if time_input not in TIME_INPUTS:
        raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
    if layer == "concatsquash" and time_input != "every":
        raise ValueError("time_input='first' needs layer='concat' (concatsquash layers "
                         f"gate every layer by t), got layer={layer!r}")  # fmt: skip


def _act_into(kind: str, pre: Tensor, out: Tensor) -> Tensor:
    """Write ``h = σ(pre)`` into ``out`` and return ``s = σ'(pre)`` (tanh, elu with α = 1,
    softplus with torch's threshold 20: the three activations of :class:`ConcatField`)."""
    if kind == "tanh":
        h = torch.tanh(pre, out=out)
        return 1.0 - h * h
    if kind == "elu":  # σ' = 1 above 0, e^pre = h + 1 below
        h = torch._C._nn.elu(pre, out=out)  # F.elu has no out=; the same kernel, no copy
        return (h + 1.0).clamp_(max=1.0)
    out.copy_(nn.functional.softplus(pre))  # torch's softplus is the identity above 20
    return torch.sigmoid(pre).masked_fill_(pre > 20.0, 1.0)


def _scaled_back(kind: str, g_a: Tensor, g_s: Tensor, h: Tensor, s: Tensor, out: Tensor) -> None:
    """``out = g_a ⊙ σ' + g_s ⊙ σ''`` written as ``σ' ⊙ (g_a + g_s ⊙ σ''/σ')`` with the ratio
    from ``h = σ(pre)`` and ``s = σ'(pre)``: ``-2 h`` (tanh), ``1 - s`` (softplus), and for elu
    1 below 0 and 0 above (``σ'' = e^pre = σ'`` below 0; elu's ``σ''`` jumps at 0)."""
    if kind == "tanh":
        inner = torch.addcmul(g_a, g_s, h, value=-2.0)
    elif kind == "elu":
        # where(h > 0, g_a, g_a + g_s) as one addcmul with the mask 1[h <= 0] written as
        # floats into ``out`` (overwritten below): a bool mask costs 3x more on CPU (the
        # comparison kernel and addcmul's bool->float promotion)
        inner = torch.addcmul(g_a, g_s, torch.le(h, 0.0, out=out))
    else:
        inner = torch.addcmul(g_a + g_s, g_s, s, value=-1.0)
    torch.mul(inner, s, out=out)


class _FusedConcatMLP(torch.autograd.Function):
    """``f(t, z)``, ``tr ∂f/∂z`` and optionally ``‖∂f/∂z‖_F²`` of a ``concat`` MLP in ONE node.

    **Forward** (forward-mode tangents). The field is ``L`` affine layers with ``σ`` between
    them: ``p_i = a_i W_iᵀ + c_i`` with ``a_0 = z``, ``a_{i+1} = σ(p_i)`` and ``f = p_{L-1}``,
    where ``W_i`` is the part of layer ``i``'s weight that sees the state and ``c_i = b_i +
    τ W_{i,τ}ᵀ`` the part that sees the time features ``τ`` (constant in ``z``). Push the D unit
    tangents ``e_d`` of ``z`` through the layers (Jacobian-vector products, one per input
    dimension, for the whole batch at once)::

        P_0[d] = e_d W_0ᵀ = W_0[:, d]         (the same row for every example)
        V_{i+1} = P_i ⊙ σ'(p_i),   P_{i+1} = V_{i+1} W_{i+1}ᵀ
        J = P_{L-1},  J[d, b, k] = ∂f_k/∂z_d,   div = Σ_d J[d, :, d],   frob = Σ_{d,k} J[d, :, k]²

    Each layer's input is held as ONE ``((D+1)·B, width)`` matrix ``X_i = [a_i; V_i[0]; ..;
    V_i[D-1]]``, so the primal and the D tangents go through one GEMM ``X_i W_iᵀ`` (the bias
    added to the first ``B`` rows only). FFJORD's exact trace takes D vector-Jacobian
    products instead, each a backward pass kept with ``create_graph`` for training; at 2D toy
    sizes autograd's per-operation cost of that double-backward graph dominates.

    **Backward** (reverse through primal and tangents together). Given ``ḡ_f``, ``ḡ_div``,
    ``ḡ_frob``: ``ḡ_J[d, b, k] = ḡ_div[b] δ_dk + 2 ḡ_frob[b] J[d, b, k]``, ``ḡ_{p_{L-1}} = ḡ_f``,
    ``ḡ_{P_{L-1}} = ḡ_J``, then for each layer from the last::

        ḡ_{W_i} = ḡ_{p_i}ᵀ a_i + Σ_d ḡ_{P_i}[d]ᵀ V_i[d]        (V_0[d] = e_d)
        ḡ_{b_i} = Σ_b ḡ_{p_i},   ḡ_{W_{i,τ}} = ḡ_{b_i} τ,   ḡ_τ += ḡ_{b_i} W_{i,τ}
        ḡ_{a_i} = ḡ_{p_i} W_i,   ḡ_{V_i} = ḡ_{P_i} W_i
        ḡ_{P_{i-1}} = ḡ_{V_i} ⊙ σ'(p_{i-1})
        ḡ_{p_{i-1}} = ḡ_{a_i} ⊙ σ'(p_{i-1}) + (Σ_d ḡ_{V_i}[d] ⊙ P_{i-1}[d]) ⊙ σ''(p_{i-1})

    and ``ḡ_z = ḡ_{p_0} W_0``: with the stacked ``G_i = [ḡ_{p_i}; ḡ_{P_i}]`` the first two
    lines are the GEMMs ``G_iᵀ X_i`` and ``G_i W_i``. The curvature ``σ''`` enters only through
    the tangent scaling ``V = P ⊙ σ'(p)``: it is what the double backward of the
    vector-Jacobian form computes. First-order only: training
    backpropagates once through the solver and the adjoint takes one vector-Jacobian product
    of the augmented dynamics; a backward with ``create_graph=True`` is a clear error.
    """

    @staticmethod
    def forward(ctx, z: Tensor, tau: Tensor, spec: tuple, *params: Tensor):
        act, extras, frobenius, flat = spec
        weights, biases = params[0::2], params[1::2]
        if flat:  # z is the flat CNF state [z.flatten(), l]: read z from it, no autograd view
            D = weights[0].shape[1] - extras[0]
            B = z.shape[0] // (D + 1)
            z = z[: B * D].view(B, D)
        else:
            B, D = z.shape
        last = len(weights) - 1

        def split(i: int) -> tuple[Tensor, Tensor]:
            W, e = weights[i], extras[i]
            if not e:
                return W, biases[i]
            n = W.shape[1] - e
            return W[:, :n], nn.functional.linear(tau, W[:, n:], biases[i])

        W0, c = split(0)
        W0t = W0.t()
        pre = torch.addmm(c, z, W0t)
        if last == 0:
            f, J = pre, W0t.unsqueeze(1).expand(D, B, D)
            ctx.save_for_backward(z, tau, *weights)
        else:
            X = z.new_empty((D + 1) * B, W0.shape[0])
            x_p, x_t = X[:B], X[B:]  # slices: views without split's Python wrapper
            s = _act_into(act, pre, x_p)
            torch.mul(s, W0t.contiguous().unsqueeze(1), out=x_t.view(D, B, -1))
            inputs, slopes, tangents = [X], [s], []
            for i in range(1, last + 1):
                Wh, c = split(i)
                Y = nn.functional.linear(X, Wh)
                y_p, y_t = Y[:B], Y[B:]
                y_p += c
                P = y_t.view(D, B, -1)
                if i == last:
                    break
                X = torch.empty_like(Y)
                x_p, x_t = X[:B], X[B:]
                s = _act_into(act, y_p, x_p)
                torch.mul(P, s, out=x_t.view(D, B, -1))
                inputs.append(X)
                slopes.append(s)
                tangents.append(P)
            f, J = y_p, P
            keep = (J,) if frobenius else ()
            ctx.save_for_backward(z, tau, *weights, *inputs, *slopes, *tangents, *keep)
        ctx.spec, ctx.shape = spec, (B, D)
        if flat:  # the flat derivative [f.flatten(), div] written in place: no cat node
            out = f.new_empty(B * (D + 1))
            out[: B * D].view(B, D).copy_(f)
            torch.sum(J.diagonal(dim1=0, dim2=2), -1, out=out[B * D :])
            return out
        div = J.diagonal(dim1=0, dim2=2).sum(-1)
        if frobenius:
            return f, div, J.square().sum((0, 2))
        return f, div

    @staticmethod
    def backward(ctx, *grads: Tensor):
        # torch's once_differentiable only objects when the incoming gradients carry a graph;
        # with constant ones (grad(div.sum(), z, create_graph=True)) it would silently return
        # gradients without one. A backward that records (create_graph=True) is refused here.
        if torch.is_grad_enabled():
            raise RuntimeError(
                "ConcatField.with_divergence (the fused exact trace) is differentiable once: "
                "its backward cannot be differentiated (create_graph=True). For higher "
                "derivatives use dynamics_with_divergence(field, t, z) (the vjp path)."
            )
        act, extras, frobenius, flat = ctx.spec
        B, D = ctx.shape
        if flat:
            g_f, g_div, g_frob = grads[0][: B * D].view(B, D), grads[0][B * D :], ()
        else:
            g_f, g_div, g_frob = grads[0], grads[1], grads[2:]
        L = len(extras)
        saved = ctx.saved_tensors
        z, tau, weights = saved[0], saved[1], saved[2 : 2 + L]
        rest = saved[2 + L :]
        inputs, slopes = rest[: L - 1], rest[L - 1 : 2 * (L - 1)]
        tangents = rest[2 * (L - 1) : 3 * (L - 1) - 1]
        W0 = weights[0][:, : weights[0].shape[1] - extras[0]]

        eye = torch.eye(D, dtype=g_f.dtype, device=g_f.device).unsqueeze(1)
        G = torch.cat([g_f, (eye * g_div.view(1, B, 1)).view(D * B, D)])
        if frobenius:
            J = rest[-1] if L > 1 else W0.t().unsqueeze(1)
            G[B:].view(D, B, D).addcmul_(J, g_frob[0].view(1, B, 1), value=2.0)
        g_params: list[Tensor | None] = [None] * (2 * L)
        g_tau = torch.zeros_like(tau) if ctx.needs_input_grad[1] else None

        def time_columns(i: int, g_c: Tensor, g_Wh: Tensor) -> Tensor:
            """The weight's gradient with its time columns ``ḡ_c τ`` (and ``ḡ_τ``'s share)."""
            W, e = weights[i], extras[i]
            if not e:
                return g_Wh
            if g_tau is not None:
                g_tau.addmm_(g_c.unsqueeze(0), W[:, W.shape[1] - e :])
            return torch.cat([g_Wh, torch.outer(g_c, tau[0])], 1)

        for i in range(L - 1, 0, -1):
            W, e = weights[i], extras[i]
            Wh = W[:, : W.shape[1] - e] if e else W
            X = inputs[i - 1]
            g_p = G[:B]
            g_c = g_p.sum(0)
            g_params[2 * i] = time_columns(i, g_c, torch.mm(G.t(), X))
            g_params[2 * i + 1] = g_c
            g_aV = torch.mm(G, Wh)
            g_a, g_V = g_aV[:B], g_aV[B:]
            g_V = g_V.view(D, B, -1)
            s = slopes[i - 1]
            P_prev = tangents[i - 2] if i > 1 else W0.t().unsqueeze(1)
            g_s = (g_V * P_prev).sum(0)
            G = torch.empty_like(X)
            g_p, g_t = G[:B], G[B:]
            torch.mul(g_V, s, out=g_t.view(D, B, -1))
            _scaled_back(act, g_a, g_s, X[:B], s, g_p)
        g_p, g_t = G[:B], G[B:]
        g_c = g_p.sum(0)
        g_params[0] = time_columns(0, g_c, torch.addmm(g_t.view(D, B, -1).sum(1).t(), g_p.t(), z))
        g_params[1] = g_c
        g_z = None
        if ctx.needs_input_grad[0] and flat:  # the flat state's gradient: l's part is zero
            g_z = g_f.new_zeros(B * (D + 1))
            torch.mm(g_p, W0, out=g_z[: B * D].view(B, D))
        elif ctx.needs_input_grad[0]:
            g_z = torch.mm(g_p, W0)
        return (g_z, g_tau, None, *g_params)


class ConcatField(nn.Module):
    """``f(z, t)``: an MLP ``D -> hidden -> .. -> D`` whose layers also see ``t``.

    Two ways for a layer to see ``t`` (Grathwohl et al. 2019, FFJORD; ``layer_type`` of
    their code, ``lib/layers/diffeq_layers/basic.py``):

    - ``"concat"`` (``ConcatLinear``): ``W [h, τ] + b``: the time features ``τ`` are more
      inputs; with Fourier features or ``time_input="first"`` computed as
      ``W_h h + (W_τ τ + b)``, the bracket once per evaluation (``τ`` is the same for the
      whole batch: no batch-sized concatenation, ~10% less CPU per field evaluation with its
      trace); with ``t`` itself at every layer (the registered default) as the concatenation,
      bit for bit what the documented runs computed;
    - ``"concatsquash"`` (``ConcatSquashLinear``, FFJORD's toy default):
      ``(W h + b) ⊙ σ(G τ + c) + E τ``: ``t`` gates every output unit and shifts it, so the
      field can switch units on and off along the path (the gate is what "squash" means).

    Time features ``τ`` (:func:`time_features`): ``t`` itself (``time_freqs = 0``, FFJORD's
    toy field) or ``time_freqs`` Fourier pairs (zuko's CNF: 3 pairs). They reach every layer
    (``time_input = "every"``, FFJORD) or only the first (``"first"``, zuko's CNF: the
    time embedding is concatenated to the input of a plain MLP; ``concat`` layers only).

    A smooth activation (the trace needs second derivatives through training) between
    layers: ``tanh`` by default (as FFJORD's toy experiments), ``softplus`` or ``elu`` (zuko's
    CNF). The last layer starts at zero (its weight and bias, and with ``concatsquash`` its
    time shift ``E``), so a new CNF is the identity map.

    :meth:`with_divergence` gives ``f`` with its exact divergence (and optionally the
    Jacobian's Frobenius norm): for ``concat`` layers in one fused autograd node
    (``_FusedConcatMLP``; ``fused`` is then true and a :class:`CNF` with ``trace="exact"``
    uses it), for ``concatsquash`` by the D vector-Jacobian products.

    Args:
        dim: D; hidden: width; depth: number of hidden layers; activation: the
        nonlinearity; layer: ``"concat"`` or ``"concatsquash"``; time_freqs: number of
        Fourier pairs of ``t`` (0: ``t`` itself); time_input: ``"every"`` or ``"first"``;
        T: the flow's end time (the period of the Fourier features is ``2T``).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        depth: int = 3,
        activation: str = "tanh",
        layer: str = "concat",
        time_freqs: int = 0,
        time_input: str = "every",
        T: float = 1.0,
    ) -> None:
        super().__init__()
        _check_field_options(activation, layer, time_freqs, time_input)
        if not T > 0:
            raise ValueError(f"T must be > 0, got {T!r}")
        self.squash = layer == "concatsquash"
        self.activation = activation
        self.time_freqs, self.T = time_freqs, float(T)
        # FFJORD's toy field (t itself at every layer): W [h, t] + b as one concatenation, so
        # the registered default computes bit for bit what its documented runs computed
        self._cat = not self.squash and time_freqs == 0 and time_input == "every"
        n_t = 1 if time_freqs == 0 else 2 * time_freqs
        sizes = [dim] + [hidden] * depth + [dim]
        pairs = list(zip(sizes[:-1], sizes[1:]))
        if self.squash:
            self.extra = [0] * len(pairs)
        else:
            self.extra = [n_t if time_input == "every" or i == 0 else 0 for i in range(len(pairs))]
        self.layers = nn.ModuleList(nn.Linear(a + e, b) for (a, b), e in zip(pairs, self.extra))
        self.dim, self._extra = dim, tuple(self.extra)
        if self.squash:  # per layer: the gate σ(G τ + c) and the shift E τ, both from τ
            self.gates = nn.ModuleList(nn.Linear(n_t, b) for _, b in pairs)
            self.shifts = nn.ModuleList(nn.Linear(n_t, b, bias=False) for _, b in pairs)
            nn.init.zeros_(self.shifts[-1].weight)
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)
        self.act = ACTIVATIONS[activation]()

    @property
    def fused(self) -> bool:
        """Whether :meth:`with_divergence` is the fused one-node computation (``concat``
        layers) rather than the generic vector-Jacobian products (``concatsquash``)."""
        return not self.squash

    def with_divergence(
        self, t: Tensor, z: Tensor, frobenius: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """``(f(t, z), tr ∂f/∂z)`` (and ``‖∂f/∂z‖_F²`` with ``frobenius``): ``(B, D)``, ``(B,)``.

        With ``concat`` layers, one autograd node (:class:`_FusedConcatMLP`): the exact trace
        by forward-mode tangents of the D input directions, held as one ``(D·B, width)``
        matrix per layer, and a hand-written backward to ``z``, ``t``'s features and every
        weight and bias. With ``concatsquash`` layers, the D vector-Jacobian products of
        :func:`~genmodels.integrate.dynamics_with_divergence`. Either way differentiable once
        while autograd records (training, the adjoint's products), detached under
        ``torch.no_grad()``.
        """
        if self.squash:
            return dynamics_with_divergence(self, t, z, method="exact", frobenius=frobenius)
        d = self.dim
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != d:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must be a (batch, {d}) tensor, got {got}")
        return self._fused(t, z, bool(frobenius), False)

    def flat_divergence(self, t: Tensor, y: Tensor) -> Tensor:
        """:meth:`with_divergence` on the flat CNF state: ``y = [z.flatten(), l]`` ``(B(D+1),)``
        to ``[f(t, z).flatten(), tr ∂f/∂z]`` ``(B(D+1),)``, the same numbers in one autograd
        node (``concat`` layers only).

        It is the ``flat_forward`` a CNF's augmented dynamics hand to ``odeint``
        (:meth:`~genmodels.integrate._flat.FlatState.wrap`): the solver holds the tuple state
        ``(z, l)`` as one flat vector anyway, and this skips the slice and view of ``z`` and the
        concatenation of ``(f, div)`` at every evaluation, with their autograd nodes.
        """
        if self.squash:
            raise ValueError("flat_divergence needs concat layers (the fused trace), got "
                             "layer='concatsquash'")  # fmt: skip
        d = self.dim
        if not isinstance(y, Tensor) or y.dim() != 1 or y.shape[0] % (d + 1):
            got = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"y must be a flat (batch * {d + 1},) state [z, l], got {got}")
        return self._fused(t, y, False, True)

    def _fused(self, t, x: Tensor, frobenius: bool, flat: bool):
        """One :class:`_FusedConcatMLP` node on ``x`` (``z``, or the flat state with ``flat``)."""
        if not isinstance(t, Tensor):  # a Python float in x's dtype (not float32 first)
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        tau = time_features(t, self.time_freqs, self.T, x.dtype)
        # (weight, bias) of every layer, read from the modules at each call (a layer or a
        # parameter the user replaces is seen), without nn.Module.__getattr__ per name
        params = [p for layer in self.layers._modules.values() for p in layer._parameters.values()]
        spec = (self.activation, self._extra, frobenius, flat)
        return _FusedConcatMLP.apply(x, tau, spec, *params)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """``dz/dt`` ``(B, D)`` at time ``t`` (0-dim) and state ``z`` ``(B, D)``."""
        last = len(self.layers) - 1
        tau = time_features(t, self.time_freqs, self.T, z.dtype)
        h = z
        for i, layer in enumerate(self.layers):
            if self.squash:
                gate = torch.sigmoid(self.gates[i](tau))
                h = torch.addcmul(self.shifts[i](tau), layer(h), gate)
            elif self._cat:
                h = layer(torch.cat([h, tau.expand(h.shape[0], -1)], 1))
            elif self.extra[i]:
                n = layer.in_features - self.extra[i]
                bias = nn.functional.linear(tau, layer.weight[:, n:], layer.bias)  # (1, out)
                h = torch.addmm(bias, h, layer.weight[:, :n].t())
            else:
                h = layer(h)
            if i < last:
                h = self.act(h)
        return h


class PlanarField(nn.Module):
    """The lecture's planar CNF field: ``f(z, t) = Σ_m u_m(t) tanh(w_m(t)ᵀ z + b_m(t))``.

    A hypernetwork ``t -> (u, w, b, gate)`` for ``units`` units (Chen et al. 2018, section 4 and
    their appendix: ``u`` is gated by ``σ(gate(t))``).  :meth:`with_divergence` returns the
    closed-form trace ``Σ_m (1 - tanh²(w_mᵀ z + b_m)) u_mᵀ w_m`` together with ``f``.

    Args:
        dim: D; units: M; hidden: width of the hypernetwork; constant: the hypernetwork ignores
            ``t`` (``u, w, b`` are parameters), the form of the discrete planar flow.
    """

    def __init__(self, dim: int, units: int = 16, hidden: int = 32, constant: bool = False):
        super().__init__()
        self.dim, self.units, self.constant = dim, units, constant
        n_out = units * (2 * dim + 2)
        if constant:
            self.theta = nn.Parameter(torch.randn(n_out) / math.sqrt(dim))
        else:
            self.hyper = nn.Sequential(
                nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
            )
            self.out = nn.Linear(hidden, n_out)
            nn.init.normal_(self.out.weight, std=0.1 / math.sqrt(hidden))
            nn.init.zeros_(self.out.bias)

    def params(self, t: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``u`` (M, D) (gated), ``w`` (M, D), ``b`` (M,) at time ``t``."""
        if self.constant:
            theta = self.theta
        else:
            theta = self.out(self.hyper(t.to(dtype).reshape(1, 1))).reshape(-1)
        m, d = self.units, self.dim
        u, w, b, gate = theta.split([m * d, m * d, m, m])
        u = u.reshape(m, d) * (1.0 if self.constant else torch.sigmoid(gate).unsqueeze(1))
        return u, w.reshape(m, d), b

    def with_divergence(self, t: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(z, t), tr ∂f/∂z)``: shapes ``(B, D)`` and ``(B,)``, one pass, no autograd."""
        u, w, b = self.params(t, z.dtype)
        h = torch.tanh(z @ w.T + b)  # (B, M)
        return h @ u, (1 - h * h) @ (u * w).sum(1)

    def forward(self, t: Tensor, z: Tensor) -> Tensor:
        """``dz/dt`` ``(B, D)``."""
        return self.with_divergence(t, z)[0]


class _Augmented(nn.Module):
    """``[z, l] -> [f(z, t), tr ∂f/∂z]`` with the trace chosen once (and ε fixed) per solve.

    With ``regularise``, the state is ``[z, l, k, j]`` and also integrates RNODE's two
    regularisers (Finlay et al. 2020): ``dk/dt = ‖f‖²`` (kinetic energy) and ``dj/dt =
    ‖∂f/∂z‖_F²`` (from the trace's own vector-Jacobian products, or the fused field's
    tangents: no extra backward pass). The exact trace of a field with ``fused = True``
    (:class:`ConcatField` with ``concat`` layers) is its ``with_divergence``, one autograd node.
    """

    def __init__(self, field: nn.Module, trace: str, noise: Tensor | None, regularise=False):
        super().__init__()
        if regularise and trace == "field":
            raise ValueError("the kinetic/Jacobian regularisers need trace='exact' or "
                             "'hutchinson' (the field's closed-form divergence gives no "
                             "Jacobian)")  # fmt: skip
        self.field, self.trace, self.noise, self.regularise = field, trace, noise, regularise
        # the field's own divergence: closed form ("field") or the fused exact trace
        self.own = trace == "field" or (trace == "exact" and getattr(field, "fused", False))
        self.method = "hutchinson" if trace == "hutchinson" else "exact"
        # odeint's flat fast path (FlatState.wrap): the fused exact trace on [z, l] as one vector
        fused = trace == "exact" and not regularise and getattr(field, "fused", False)
        self.flat_forward = field.flat_divergence if fused else None

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        z = state[0]
        if not self.regularise:
            if self.own:
                return self.field.with_divergence(t, z)
            return dynamics_with_divergence(self.field, t, z, method=self.method, noise=self.noise)
        if self.own:
            dz, div, frob = self.field.with_divergence(t, z, frobenius=True)
        else:
            dz, div, frob = dynamics_with_divergence(
                self.field, t, z, method=self.method, noise=self.noise, frobenius=True
            )
        return dz, div, dz.square().flatten(1).sum(1), frob


class CNF(Transform):
    """A continuous normalizing flow as a :class:`Transform`: value and ``log|det J|`` together.

    ``forward(x) = (z(T), ∫_0^T tr ∂f/∂z dt)`` solving ``dz/dt = f(z, t)`` from ``z(0) = x``;
    ``inverse(z) = (x, -∫_0^T tr ∂f/∂z dt)`` solving from ``z(T) = z`` back to 0.

    Args:
        field: ``field(t, z) -> (B, D)`` (an ``nn.Module``; with ``trace="field"`` it also has
            ``with_divergence(t, z)``; with ``trace="exact"`` a field whose ``fused`` is true
            gives ``with_divergence(t, z, frobenius)`` and the CNF uses it in place of the D
            vector-Jacobian products).
        trace: ``"exact"``, ``"hutchinson"`` or ``"field"`` (see the module docstring).
        noise: Hutchinson's ε, ``"rademacher"`` or ``"gaussian"``.
        T: the end time.
        method, rtol, atol, step_size: the solver (``step_size`` makes a fixed-step solve).
        train_rtol, train_atol: the tolerances while autograd records (training); None: the
            same as ``rtol``/``atol``. FFJORD's code has the pair the other way round
            (``--test_rtol``/``--test_atol`` for evaluation): a looser training solve takes
            fewer steps, while ``log_prob`` under ``torch.no_grad()`` keeps ``rtol``/``atol``.
        adjoint: gradients by the adjoint method (O(1) memory) instead of backpropagation.
        exact_dims: under ``torch.no_grad()``, a Hutchinson CNF of at most this many dimensions
            uses the exact trace (evaluation reports the exact likelihood).

    ``forward``/``inverse`` take ``generator=`` for the Hutchinson noise.
    """

    def __init__(
        self,
        field: nn.Module,
        *,
        trace: str = "exact",
        noise: str = "rademacher",
        T: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
        adjoint: bool = False,
        exact_dims: int = 8,
        train_rtol: float | None = None,
        train_atol: float | None = None,
    ) -> None:
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
        if not T > 0:
            raise ValueError(f"T must be > 0, got {T!r}")
        for name, tol in (("train_rtol", train_rtol), ("train_atol", train_atol)):
            if tol is not None and not tol > 0:
                raise ValueError(f"{name} must be > 0 or None, got {tol!r}")
        self.field, self.trace, self.noise, self.T = field, trace, noise, float(T)
        self.method, self.rtol, self.atol, self.step_size = method, rtol, atol, step_size
        self.adjoint, self.exact_dims = adjoint, exact_dims
        self.train_rtol = rtol if train_rtol is None else train_rtol
        self.train_atol = atol if train_atol is None else train_atol

    def _solve(self, x: Tensor, t0: float, t1: float, generator) -> tuple[Tensor, Tensor]:
        zs, ls = self._solve_grid(x, [t0, t1], generator)
        return zs[-1], ls[-1]

    def trajectory(
        self, x: Tensor, times: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(z(times), ∫_{times[0]}^{times} tr ∂f/∂z dt)`` from ``z(times[0]) = x``.

        ``times``: a strictly increasing 1-D grid inside ``[0, T]``.  Shapes ``(K, B, D)`` and
        ``(K, B)``.  The density at time ``s`` of the flow's path from the data (``s = 0``) to the
        base (``s = T``): ``log p_s(y) = log N(z(T); 0, I) + l(T)`` with ``trajectory(y,
        [s, T])``.
        """
        ts = check_times(times, name="times", caller="CNF.trajectory")
        if len(ts) > 1 and ts[1] < ts[0]:
            raise ValueError(f"CNF.trajectory: times must be strictly increasing; "
                             f"times[0]={ts[0]!r}, times[1]={ts[1]!r}")  # fmt: skip
        if ts[0] < 0 or ts[-1] > self.T:
            raise ValueError(f"CNF.trajectory: times must lie in [0, T] = [0, {self.T}], got "
                             f"[{ts[0]}, {ts[-1]}]")  # fmt: skip
        return self._solve_grid(x, ts, generator)

    def regularised(
        self, x: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(z(T), ladj, K, J)``: :meth:`forward` plus RNODE's two integrals along the path.

        ``K = ∫_0^T ‖f(z(t), t)‖² dt`` (the kinetic energy) and ``J = ∫_0^T ‖∂f/∂z‖_F² dt``
        (the Jacobian's Frobenius norm; Hutchinson's estimate with ``trace="hutchinson"``),
        each ``(B,)``, integrated in the same solve as ``z`` and the log-det (Finlay, Jacobsen,
        Nurbekyan & Oberman 2020, "How to train your neural ODE", eq. 8-10). Penalising them
        makes the learned field straighter and smoother, so that the adaptive solver needs
        fewer steps, at (in their experiments) no cost in likelihood.
        """
        return tuple(s[-1] for s in self._solve_grid(x, [0.0, self.T], generator, True))

    def _solve_grid(
        self, x: Tensor, ts: list[float], generator, regularise: bool = False
    ) -> tuple[Tensor, ...]:
        trace = self.trace
        if trace == "hutchinson" and not torch.is_grad_enabled():
            trace = "exact" if x[0].numel() <= self.exact_dims else trace
        eps = None
        if trace == "hutchinson":
            eps = hutchinson_noise(
                x.shape, self.noise, generator=generator, dtype=x.dtype, device=x.device
            )
        aug = _Augmented(self.field, trace, eps, regularise)
        t = torch.tensor(ts, dtype=x.dtype, device=x.device)
        state = (x, x.new_zeros(x.shape[0]))
        if regularise:
            state = state + (x.new_zeros(x.shape[0]), x.new_zeros(x.shape[0]))
        opts = None if self.step_size is None else dict(step_size=self.step_size)
        grad = torch.is_grad_enabled()
        rtol, atol = (self.train_rtol, self.train_atol) if grad else (self.rtol, self.atol)
        kw = dict(rtol=rtol, atol=atol, method=self.method, options=opts)
        if self.adjoint and grad:
            return odeint_adjoint(aug, state, t, adjoint_params=self.field.parameters(), **kw)
        return odeint(aug, state, t, **kw)

    def forward(
        self, x: Tensor, context: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(z, ladj)``: ``(B, D)`` base points and ``log|det ∂z/∂x|`` ``(B,)`` in nats."""
        return self._solve(x, 0.0, self.T, generator)

    def inverse(
        self, z: Tensor, context: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(x, ladj)``: data points and ``log|det ∂x/∂z|`` ``(B,)`` (minus forward's)."""
        x, ladj = self._solve(z, self.T, 0.0, generator)
        return x, ladj


def _check_weights(**weights) -> None:
    """RNODE's regulariser weights (shared by ``CNFModel`` and ``FFJORDConfig.validate``)."""
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
            raise ValueError(f"{name} must be a number >= 0, got {w!r}")


class CNFModel(FlowModel):
    """A density model ``Standardize`` then a :class:`CNF`, over ``N(0, I)`` (task "density").

    ``loss`` draws the Hutchinson noise from the step's ``generator``; ``log_prob`` (no
    generator) uses the exact trace under ``torch.no_grad()`` in low dimension.

    ``kinetic`` and ``jacobian`` (``λ_K``, ``λ_J`` >= 0) add RNODE's regularisers to the
    training loss (Finlay et al. 2020): ``loss = NLL + λ_K E[K] + λ_J E[J]`` with ``K``, ``J``
    from :meth:`CNF.regularised`, in the standardised coordinates the CNF sees. ``log_prob``
    is unchanged by them (they only change which field training finds).
    """

    def __init__(
        self,
        cnf: CNF,
        event_shape: tuple[int, ...],
        *,
        kinetic: float = 0.0,
        jacobian: float = 0.0,
    ) -> None:
        super().__init__([cnf], event_shape)
        _check_weights(kinetic=kinetic, jacobian=jacobian)
        if (kinetic or jacobian) and cnf.trace == "field":
            raise ValueError("kinetic/jacobian regularisers need a CNF with trace='exact' or "
                             "'hutchinson', got trace='field'")  # fmt: skip
        self.kinetic, self.jacobian = float(kinetic), float(jacobian)

    @property
    def cnf(self) -> CNF:
        """The continuous flow (the second layer)."""
        return self.transform.transforms[1]

    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``log p(x)`` in nats, ``(n, D) -> (n,)``."""
        self._check(x)
        if x.shape[0] == 0:
            return x.new_zeros(0)
        std: Standardize = self.standardize
        z0, l0 = std(x)
        z, l1 = self.cnf(z0, generator=generator)
        return standard_normal_log_prob(z) + l0 + l1

    def loss(self, batch: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Mean negative log-likelihood of the batch ``(B, D)`` in nats (plus the weighted
        regularisers when ``kinetic`` or ``jacobian`` is set)."""
        if not (self.kinetic or self.jacobian):
            return -self.log_prob(batch, generator=generator).mean()
        self._check(batch)
        z0, l0 = self.standardize(batch)
        z, l1, k, j = self.cnf.regularised(z0, generator=generator)
        nll = -(standard_normal_log_prob(z) + l0 + l1).mean()
        return nll + self.kinetic * k.mean() + self.jacobian * j.mean()


#: The keys of every ``ffjord`` config.json ever written (a run's whole config, not a user's
#: override): what :meth:`FFJORDConfig.upgrade_fields` takes for "a saved run".
_FFJORD_FIELDS_OF_EVERY_SAVED_CONFIG = frozenset(
    {"hidden", "depth", "trace", "noise", "T", "method", "rtol", "atol", "step_size", "adjoint"}
)


@dataclass
class FFJORDConfig:
    """FFJORD (Grathwohl et al. 2019): an MLP field, exact or Hutchinson trace.

    The field (:class:`ConcatField`): ``activation`` (tanh, softplus, elu), ``layer`` (concat,
    concatsquash), ``time_freqs`` (0: ``t`` itself; k: k Fourier pairs of ``t``, zuko's CNF
    uses 3) and ``time_input`` (``"every"`` layer, FFJORD's; ``"first"`` only, zuko's CNF).
    The defaults: FFJORD's toy field (the time features concatenated at every layer) with ELU
    in place of its tanh and one Fourier pair ``(cos πt/T, sin πt/T)`` in place of ``t``
    (docs/cnf.md, "The registered field": closer to zuko's CNF on the thin toys at a fraction
    of its step time). A run saved before a default changed trained with the old one and
    loads with it (:meth:`upgrade_fields`): no ``activation`` in its ``config.json`` is tanh,
    no ``time_freqs`` is ``t`` itself (0).
    """

    hidden: int = 64
    depth: int = 3
    activation: str = "elu"
    layer: str = "concat"
    time_freqs: int = 1
    time_input: str = "every"
    trace: str = "exact"
    noise: str = "rademacher"
    T: float = 1.0
    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    step_size: float | None = None
    adjoint: bool = False
    train_rtol: float | None = 1e-4
    train_atol: float | None = 1e-4
    kinetic: float = 0.0
    jacobian: float = 0.0

    @staticmethod
    def upgrade_fields(old: dict) -> dict:
        """A ``config.json`` saved before ``activation`` (``time_freqs``) existed trained the
        tanh field (with ``t`` itself as the time input)."""
        if _FFJORD_FIELDS_OF_EVERY_SAVED_CONFIG <= set(old):
            old = {"activation": "tanh", "time_freqs": 0} | old
        return old

    def validate(self) -> None:
        """The field's options, checked when the config is made (bad values name the key)."""
        _check_field_options(self.activation, self.layer, self.time_freqs, self.time_input)
        _check_weights(kinetic=self.kinetic, jacobian=self.jacobian)


@dataclass
class PlanarCNFConfig:
    """The lecture's planar CNF: M planar units from a hypernetwork of t."""

    units: int = 16
    hidden: int = 32
    T: float = 1.0
    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    step_size: float | None = None
    adjoint: bool = False


def _dim(info: DataInfo, name: str) -> int:
    if info.kind != "points" or len(info.event_shape) != 1:
        raise ValueError(f"{name} takes points (n, d), got {info.kind} {info.event_shape}")
    return int(info.event_shape[0])


def _solver(config) -> dict:
    return dict(
        T=config.T, method=config.method, rtol=config.rtol, atol=config.atol,
        step_size=config.step_size, adjoint=config.adjoint,
    )  # fmt: skip


@register(
    "ffjord",
    config=FFJORDConfig,
    default_data="8gaussians",
    task="density",
    section=4,
    description="FFJORD continuous normalizing flow (Grathwohl et al. 2019)",
)
def build_ffjord(config: FFJORDConfig, info: DataInfo) -> CNFModel:
    """FFJORD on ``info``'s points: ``ConcatField(d, hidden, depth, ...)`` in a :class:`CNF`."""
    d = _dim(info, "ffjord")
    field = ConcatField(
        d, config.hidden, config.depth, config.activation, config.layer,
        config.time_freqs, config.time_input, config.T,
    )  # fmt: skip
    tols = dict(train_rtol=config.train_rtol, train_atol=config.train_atol)
    cnf = CNF(field, trace=config.trace, noise=config.noise, **_solver(config), **tols)
    return CNFModel(cnf, (d,), kinetic=config.kinetic, jacobian=config.jacobian)


@register(
    "planar-cnf",
    config=PlanarCNFConfig,
    default_data="8gaussians",
    task="density",
    section=4,
    description="the lecture's planar CNF (Chen et al. 2018, sec. 4)",
)
def build_planar_cnf(config: PlanarCNFConfig, info: DataInfo) -> CNFModel:
    """The planar CNF on ``info``'s points (closed-form trace)."""
    d = _dim(info, "planar-cnf")
    field = PlanarField(d, config.units, config.hidden)
    return CNFModel(CNF(field, trace="field", **_solver(config)), (d,))
