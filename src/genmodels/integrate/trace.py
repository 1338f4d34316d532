"""Trace estimators: the divergence ``tr(∂f/∂z)`` of a vector field, exact or by Hutchinson.

A continuous normalizing flow (Chen et al. 2018; FFJORD, Grathwohl et al. 2019) and the
probability flow ODE of a score SDE (Song et al. 2021) both need the instantaneous change of
variables::

    dz/dt = f(t, z),        d log p(z(t))/dt = -tr(∂f/∂z)

This module computes that trace once, for both.

- **Exact**: ``tr(∂f/∂z) = Σ_i e_iᵀ (∂f/∂z) e_i``, one vector-Jacobian product per dimension
  (D backward passes; :func:`divergence_exact`). ``batched=True`` does the D products in one
  vmapped backward (``is_grads_batched``), i.e. the dense per-example Jacobian's diagonal.
- **Hutchinson** (Hutchinson 1990; FFJORD section 3.1): ``tr(A) = E[εᵀAε]`` for any noise with
  ``E[εεᵀ] = I``, so ``εᵀ(∂f/∂z)ε`` is an unbiased estimate from ONE vector-Jacobian product
  (:func:`divergence_hutchinson`). For symmetric ``A`` its variance is ``2‖A‖_F²`` with Gaussian
  ε and ``2‖A‖_F² - 2 Σ_i A_ii²`` with Rademacher ε (±1), which is never larger.

The noise ε is drawn ONCE per solve (:func:`hutchinson_noise`, from the caller's generator) and
held fixed for that solve: the ODE is then one deterministic vector field, which an adaptive
solver needs, and an adjoint's backward pass sees the same field as the forward pass.

Shapes: ``z`` is ``(batch, D)`` (trailing event dims ``(batch, *event)`` are accepted and
flattened for the sum); ``div`` is ``(batch,)``. Rows must not interact (no batch statistics
inside ``f``): the trace of row b is taken from ``∂(Σ_b f_b)/∂z_b``.

Gradients: everything works under ``torch.no_grad()`` (grad is enabled inside where it is
needed). With ``create_graph=False`` the results are detached; with ``create_graph=True`` the
divergence is differentiable with respect to ``z`` and to the parameters of ``f``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "NOISE_KINDS",
    "hutchinson_noise",
    "divergence_exact",
    "divergence_hutchinson",
    "dynamics_with_divergence",
]

NOISE_KINDS = ("rademacher", "gaussian")


def hutchinson_noise(
    shape: tuple[int, ...] | torch.Size,
    kind: str = "rademacher",
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Noise ε with ``E[ε] = 0``, ``E[εεᵀ] = I`` for :func:`divergence_hutchinson`.

    Draw it once per solve and pass the same tensor to every evaluation of the dynamics.

    Args:
        shape: the state's shape, ``(batch, D)``.
        kind: ``"rademacher"`` (±1 with probability 1/2 each; lower variance) or
            ``"gaussian"`` (standard normal).
        generator: the caller's ``torch.Generator`` (on ``device``).
        dtype, device: of the result (default: torch's default dtype, CPU).

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> eps = hutchinson_noise((4, 2), "rademacher", generator=g, dtype=torch.float64)
        >>> bool(((eps == 1) | (eps == -1)).all())
        True
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"kind must be one of {NOISE_KINDS}, got {kind!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    if kind == "gaussian":
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    bits = torch.randint(0, 2, shape, generator=generator, device=device)
    return (2 * bits - 1).to(dtype)


def _check_pair(f_out: Tensor, z: Tensor) -> None:
    if not isinstance(f_out, Tensor) or not isinstance(z, Tensor):
        raise TypeError("f_out and z must be Tensors")
    if f_out.shape != z.shape or z.dim() < 2:
        raise ValueError(
            f"f_out and z must have the same shape (batch, D), got f_out {tuple(f_out.shape)} "
            f"and z {tuple(z.shape)}"
        )
    if not f_out.requires_grad:
        raise ValueError(
            "f_out has no graph to z: compute f_out = f(t, z) with grad enabled and z requiring "
            "grad (dynamics_with_divergence does this for you, also under torch.no_grad())"
        )


def _vjp(out: Tensor, z: Tensor, v: Tensor | None, create_graph: bool, **kw) -> Tensor:
    """``vᵀ ∂out/∂z`` by one ``autograd.grad``; zeros where ``out`` does not depend on ``z``."""
    (g,) = torch.autograd.grad(
        out, z, v, create_graph=create_graph, allow_unused=True, materialize_grads=True, **kw
    )
    return g


def divergence_exact(
    f_out: Tensor,
    z: Tensor,
    *,
    create_graph: bool = False,
    batched: bool = False,
    frobenius: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Exact ``tr(∂f/∂z)`` per row from D vector-Jacobian products.

    ``tr(∂f/∂z) = Σ_i ∂f_i/∂z_i``, where ``∂f_i/∂z`` is one ``autograd.grad`` of ``f_out[:, i]``
    (summed over the batch: rows are independent).

    Args:
        f_out: ``f(t, z)``, shape ``(batch, D)``, computed from ``z`` with grad enabled.
        z: the state, shape ``(batch, D)``.
        create_graph: keep the graph, so that the divergence can be differentiated.
        batched: do the D products in one vmapped backward (``is_grads_batched``), i.e. take
            the diagonal of the dense per-example Jacobian ``(D, batch, D)``. Same result;
            on a CPU with an MLP it was not faster (D = 2..32, batch 256; see
            docs/integrate_ode.md), and it needs batching rules for every backward op.
        frobenius: also return ``‖∂f/∂z‖_F²`` per row, the sum of the squared entries of the
            D rows the trace already computes (free; the Jacobian regulariser of RNODE,
            Finlay et al. 2020).

    Returns:
        ``(batch,)``, detached unless ``create_graph``; with ``frobenius`` the pair
        ``(div, ‖∂f/∂z‖_F²)``.

    Example::

        >>> z = torch.randn(3, 2, requires_grad=True)
        >>> divergence_exact(2.0 * z, z)
        tensor([4., 4., 4.])
    """
    _check_pair(f_out, z)
    b = z.shape[0]
    f_flat = f_out.reshape(b, -1)
    d = f_flat.shape[1]
    if batched:
        eye = torch.eye(d, dtype=f_out.dtype, device=f_out.device)
        grad_out = eye.unsqueeze(1).expand(d, b, d).reshape(d, *f_out.shape)
        jac = _vjp(f_out, z, grad_out, create_graph, is_grads_batched=True)
        div = torch.diagonal(jac.reshape(d, b, d), dim1=0, dim2=2).sum(-1)
        frob = jac.reshape(d, b, d).square().sum((0, 2)) if frobenius else None
    else:
        div = torch.zeros(b, dtype=f_out.dtype, device=f_out.device)
        frob = torch.zeros_like(div) if frobenius else None
        for i in range(d):
            row = _vjp(f_flat[:, i].sum(), z, None, create_graph, retain_graph=True)
            row = row.reshape(b, -1)
            div = div + row[:, i]
            if frobenius:
                frob = frob + row.square().sum(1)
    if not create_graph:
        div = div.detach()
        frob = None if frob is None else frob.detach()
    return (div, frob) if frobenius else div


def divergence_hutchinson(
    f_out: Tensor, z: Tensor, eps: Tensor, *, create_graph: bool = False, frobenius: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Hutchinson's unbiased estimate ``εᵀ (∂f/∂z) ε`` per row, from one vector-Jacobian product.

    Args:
        f_out: ``f(t, z)``, shape ``(batch, D)``, computed from ``z`` with grad enabled.
        z: the state, shape ``(batch, D)``.
        eps: noise from :func:`hutchinson_noise`, shape ``(batch, D)``; keep it fixed over a
            solve.
        create_graph: keep the graph, so that the estimate can be differentiated.
        frobenius: also return ``‖εᵀ ∂f/∂z‖²`` per row, an unbiased estimate of
            ``‖∂f/∂z‖_F²`` from the same product (``E[εεᵀ] = I``; RNODE's Jacobian term,
            Finlay et al. 2020).

    Returns:
        ``(batch,)``, detached unless ``create_graph``; with ``frobenius`` the pair.

    Example::

        >>> z = torch.randn(3, 2, requires_grad=True)
        >>> eps = hutchinson_noise((3, 2), generator=torch.Generator().manual_seed(0))
        >>> divergence_hutchinson(2.0 * z, z, eps)   # εᵀ(2I)ε = 2|ε|² = 4 for ±1 noise
        tensor([4., 4., 4.])
    """
    _check_pair(f_out, z)
    if not isinstance(eps, Tensor) or eps.shape != z.shape:
        raise ValueError(
            f"eps must be a Tensor of the state's shape {tuple(z.shape)}, "
            f"got {tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__}"
        )
    vjp = _vjp(f_out, z, eps, create_graph).reshape(z.shape[0], -1)
    div = (vjp * eps.reshape(z.shape[0], -1)).sum(1)
    frob = vjp.square().sum(1) if frobenius else None
    if not create_graph:
        div = div.detach()
        frob = None if frob is None else frob.detach()
    return (div, frob) if frobenius else div


def dynamics_with_divergence(
    f: Callable[[Tensor, Tensor], Tensor],
    t: Tensor | float,
    z: Tensor,
    *,
    method: str = "exact",
    noise: Tensor | None = None,
    create_graph: bool | None = None,
    frobenius: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Evaluate ``dz/dt = f(t, z)`` and its divergence ``tr(∂f/∂z)`` together.

    The augmented dynamics of a CNF (FFJORD's equation 4) are then one line::

        def aug(t, state):
            z, _ = state
            dz, div = dynamics_with_divergence(f, t, z, method="hutchinson", noise=eps)
            return dz, -div                       # d log p/dt = -tr(∂f/∂z)

    Args:
        f: the vector field ``f(t, z) -> (batch, D)``; rows must not interact.
        t: time (passed to ``f`` unchanged).
        z: state, shape ``(batch, D)``; may or may not require grad.
        method: ``"exact"`` (D backward passes), ``"exact_batched"`` (one vmapped backward)
            or ``"hutchinson"`` (one backward, needs ``noise``).
        noise: ε from :func:`hutchinson_noise`, shape of ``z``, drawn once per solve.
        create_graph: keep the graph so that ``dz/dt`` and the divergence can be
            differentiated (w.r.t. ``z`` and ``f``'s parameters). ``None`` (default) means
            ``torch.is_grad_enabled()`` at the call: differentiable under backprop through a
            solver and inside an adjoint's backward pass, detached and cheaper under
            ``torch.no_grad()``.
        frobenius: also return ``‖∂f/∂z‖_F²`` per row (exact from the D products, or
            Hutchinson's ``‖εᵀ∂f/∂z‖²`` from the one product): the Jacobian term of RNODE's
            regulariser (Finlay et al. 2020, "How to train your neural ODE"), at no extra
            backward pass.

    Returns:
        ``(dz/dt, div)``: shapes ``(batch, D)`` and ``(batch,)``; detached unless
        ``create_graph``. With ``frobenius``: ``(dz/dt, div, ‖∂f/∂z‖_F²)``.

    Example::

        >>> A = torch.tensor([[1.0, 2.0], [0.0, -3.0]])
        >>> with torch.no_grad():
        ...     dz, div = dynamics_with_divergence(lambda t, z: z @ A.T, 0.0, torch.ones(4, 2))
        >>> div
        tensor([-2., -2., -2., -2.])
    """
    if method not in ("exact", "exact_batched", "hutchinson"):
        raise ValueError(f"method must be 'exact', 'exact_batched' or 'hutchinson', got {method!r}")
    if method == "hutchinson" and noise is None:
        raise ValueError(
            "method='hutchinson' needs noise=hutchinson_noise(z.shape, ...), drawn once per solve"
        )
    if create_graph is None:
        create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # Keep the caller's graph to z only when it is wanted; otherwise work on a fresh leaf.
        zg = z if (create_graph and z.requires_grad) else z.detach().requires_grad_(True)
        f_out = f(t, zg)
        if not isinstance(f_out, Tensor):
            raise TypeError(f"the vector field f(t, z) returned {type(f_out).__name__}; expected "
                            f"a tensor of z's shape {tuple(z.shape)}")  # fmt: skip
        if f_out.shape != z.shape:
            raise ValueError(f"the vector field f(t, z) returned shape {tuple(f_out.shape)}; "
                             f"expected z's shape {tuple(z.shape)}")  # fmt: skip
        if not f_out.requires_grad:  # a field that depends on nothing differentiable
            div = torch.zeros(z.shape[0], dtype=f_out.dtype, device=f_out.device)
            out = (div, torch.zeros_like(div)) if frobenius else div
        elif method == "hutchinson":
            out = divergence_hutchinson(
                f_out, zg, noise, create_graph=create_graph, frobenius=frobenius
            )
        else:
            out = divergence_exact(
                f_out, zg, create_graph=create_graph, batched=method == "exact_batched",
                frobenius=frobenius,
            )  # fmt: skip
    dz = f_out if create_graph else f_out.detach()
    return (dz, *out) if frobenius else (dz, out)
