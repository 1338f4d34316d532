"""Score matching and noise-conditional score networks (the lecture's section 6).

- :func:`dsm_loss`: denoising score matching (Vincent 2011), a reusable loss. With
  q_σ(x̃ | x) = N(x, σ²I) the score of the kernel is ∇_x̃ log q_σ(x̃ | x) = (x - x̃)/σ², and

      J_DSM(θ; σ) = E_{x ~ p, x̃ ~ q_σ(·|x)} ½ λ(σ) ‖s_θ(x̃, σ) - (x - x̃)/σ²‖²,

  whose minimiser over all functions is s*(x̃, σ) = ∇ log q_σ(x̃), the score of the data
  smoothed by the kernel (p * N(0, σ²I)); for small σ it approaches ∇ log p.
  *Lecture slip*: the DSM slide writes s_θ(x); the network takes the noisy x̃, and the
  kernel is N(x, σ²I) (the slide's N(0, σ²) is the law of the noise x̃ - x).
- :class:`NoiseLevels`: the NCSN's σ_1 > σ_2 > ... > σ_L (a geometric sequence by
  default) as a process on t ∈ [0, 1] that the samplers of :mod:`.samplers` read: level i
  sits at t_i = (L-i)/(L-1), σ(t) is log-linear in between (exactly geometric for a
  geometric sequence), x̃ = x + σ(t) z (``mean_coef`` = 1: variance exploding).
- :class:`NCSN`: a noise-conditional score network (Song & Ermon 2019) trained by the
  lecture's loop (pick σ_i, perturb x̃ = x + σ_i z, DSM with λ(σ) = σ², repeat) and
  sampled by annealed Langevin dynamics
  (:func:`~genmodels.models.samplers.annealed_langevin`, Algorithm 1, plus the final
  Tweedie denoising step). σ_1 defaults to the largest pairwise distance of the training
  data (Song & Ermon 2020, "Improved Techniques for Training Score-Based Generative
  Models", technique 1).

The network is an ε-network: s_θ(x̃, σ) = -ε_θ(x̃, σ)/σ. With λ(σ) = σ² the DSM term is
then ½‖ε_θ(x̃, σ) - z‖² for x̃ = x + σz, so the weighting makes every level's loss O(1)
(Song & Ermon 2019, sec. 4.2) and the score's 1/σ scale is built in (as their 2020
technique 3, s_θ(x, σ) = s_θ(x)/σ, does for an unconditional network).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..nn import time_network_for
from ..registry import DataInfo, register
from .samplers import SAMPLERS

__all__ = ["dsm_loss", "NoiseLevels", "score_model", "max_pairwise_distance", "NCSN", "NCSNConfig"]

#: the network's time input is NET_TIME_SCALE · t (t ∈ [0, 1]): the range of the DDPM's
#: integer steps 0..999, which the sinusoidal embedding of ``nn.time_network`` was tuned on.
NET_TIME_SCALE = 999.0


def dsm_loss(
    score: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sigma: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    weighting: str = "sigma2",
) -> Tensor:
    """Denoising score matching: the mean over the batch of ½ λ(σ) ‖s(x̃, σ) - (x - x̃)/σ²‖².

    Args:
        score: ``score(x̃, sigma) -> s`` of the shape of x̃; ``sigma`` is passed as an
            ``(n,)`` tensor (one level per example).
        x: clean data ``(n, *event_shape)``.
        sigma: the noise level(s): a number or an ``(n,)`` tensor, all > 0.
        generator: source of the perturbation z ~ N(0, I), x̃ = x + σ z.
        weighting: λ(σ) = σ² (``"sigma2"``, Song & Ermon 2019) or 1 (``"none"``).

    Returns:
        a scalar: the squared norm is summed over the event dimensions (nats-free units of
        score², times σ² by default) and averaged over the batch.

    The target (x - x̃)/σ² is computed as -z/σ (the same number, without the cancellation
    of x - x̃ at small σ).

    Example::

        >>> x = torch.randn(512, 2)
        >>> float(dsm_loss(lambda xt, s: -xt / (1 + s[:, None] ** 2), x, 0.5)) < 1.0
        True
    """
    if weighting not in ("sigma2", "none"):
        raise ValueError(f"weighting must be 'sigma2' or 'none', got {weighting!r}")
    n = x.shape[0]
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.dim() == 0:
        sigma = sigma.expand(n)
    if sigma.shape != (n,):
        raise ValueError(f"sigma must be a number or of shape ({n},), got {tuple(sigma.shape)}")
    if not bool((sigma > 0).all()) or not bool(torch.isfinite(sigma).all()):
        raise ValueError("sigma must be positive and finite")
    sig = sigma.view(-1, *([1] * (x.dim() - 1)))
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_tilde = x + sig * z
    target = -z / sig  # = (x - x̃)/σ² = ∇_x̃ log q_σ(x̃ | x)
    sq = (score(x_tilde, sigma) - target).square().flatten(1).sum(1)
    lam = sigma.square() if weighting == "sigma2" else torch.ones_like(sigma)
    return (0.5 * lam * sq).mean()


class NoiseLevels:
    """σ_1 > ... > σ_L > 0 as a process on t ∈ [0, 1] (see the module docstring).

    The interface the samplers read (as :class:`~genmodels.models.noise.NoiseProcess`):
    ``sigma(t)``, ``mean_coef(t)`` (= 1), ``net_time(t)`` (= 999 t, the network's input),
    ``grid()`` (the L levels' times 1 = t_1 > ... > t_L = 0). Times are float64.

    Example::

        >>> lv = NoiseLevels.geometric(20.0, 1.0, 10)
        >>> [round(float(s), 3) for s in lv.sigma(lv.grid()[:3])]
        [20.0, 14.330, 10.268]
    """

    def __init__(self, sigmas: Tensor | Sequence[float]):
        s = torch.as_tensor(sigmas, dtype=torch.float64).cpu()
        if s.dim() != 1 or len(s) < 2:
            raise ValueError(f"sigmas must be a 1-D sequence of >= 2 levels, got {tuple(s.shape)}")
        if not bool(torch.isfinite(s).all()) or not bool((s > 0).all()):
            raise ValueError(f"every sigma must be positive and finite, got {s.tolist()}")
        if not bool((s[1:] < s[:-1]).all()):
            raise ValueError(
                f"sigmas must strictly decrease (σ_1 > σ_2 > ... > σ_L), got {s.tolist()}"
            )
        self.sigmas = s
        self._log = s.log()

    @classmethod
    def geometric(cls, sigma_max: float, sigma_min: float, levels: int) -> NoiseLevels:
        """σ_i = σ_1 (σ_L/σ_1)^((i-1)/(L-1)), i = 1..L (Song & Ermon 2019)."""
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        if not 0 < sigma_min < sigma_max < math.inf:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        u = torch.linspace(0, 1, levels, dtype=torch.float64)
        return cls((math.log(sigma_max) + u * math.log(sigma_min / sigma_max)).exp())

    def __len__(self) -> int:
        return len(self.sigmas)

    def grid(self, steps: int | None = None, spacing: str | None = None) -> Tensor:
        """The levels' times 1 = t_1 > ... > t_L = 0 (``steps``: that many log-spaced
        levels between σ_1 and σ_L instead)."""
        if spacing not in (None, "uniform"):
            raise ValueError(f"spacing must be 'uniform' for NoiseLevels, got {spacing!r}")
        k = len(self) if steps is None else steps
        if k < 2:
            raise ValueError(f"annealed Langevin needs >= 2 levels, got {k}")
        return torch.linspace(1.0, 0.0, k, dtype=torch.float64)

    def sigma(self, t) -> Tensor:
        """σ(t), log-linear between the levels (σ(t_i) = σ_i)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError("t must lie in [0, 1]")
        u = (1 - t) * (len(self) - 1)  # position in the level index, 0..L-1
        i = u.floor().clamp(0, len(self) - 2).long()
        f = u - i
        return (self._log[i] + f * (self._log[i + 1] - self._log[i])).exp()

    def mean_coef(self, t) -> Tensor:
        """1: the data is not scaled (x̃ = x + σ z)."""
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def net_time(self, t) -> Tensor:
        """The network's input for time t: 999 t (float64)."""
        return torch.as_tensor(t, dtype=torch.float64) * NET_TIME_SCALE

    def __repr__(self) -> str:
        s = self.sigmas
        return f"NoiseLevels(L={len(s)}, sigma_max={float(s[0]):.4g}, sigma_min={float(s[-1]):.4g})"


def score_model(score: Callable[[Tensor, float], Tensor], levels: NoiseLevels):
    """An ε-network for the samplers from a known score ``score(x, sigma) -> ∇ log q_σ(x)``:
    ε(x, t_net) = -σ · score(x, σ) with σ = levels.sigma(t_net / 999) (e.g. the exact score
    of a perturbed mixture, to run annealed Langevin without a network)."""

    def eps_model(x: Tensor, t_net: Tensor) -> Tensor:
        sigma = float(levels.sigma(float(t_net.reshape(-1)[0]) / NET_TIME_SCALE))
        return score(x, sigma) * -sigma

    return eps_model


def max_pairwise_distance(x: Tensor, max_points: int = 4096, chunk: int = 1024) -> float:
    """The largest Euclidean distance between two rows of ``x`` (flattened), over its first
    ``max_points`` rows (training splits come shuffled; 100k rows would cost 10^10 pairs)."""
    x = x[:max_points].flatten(1).double()
    return max(float(torch.cdist(b, x).max()) for b in x.split(chunk))


class NCSN(nn.Module):
    """A noise-conditional score network over levels σ_1 > ... > σ_L (Song & Ermon 2019).

    Args:
        eps_model: ``eps_model(x̃, t_net) -> ε̂`` of the shape of x̃; the score is
            s_θ(x̃, σ) = -ε̂/σ with ``t_net = 999 t(σ)`` (:class:`NoiseLevels`).
        event_shape: shape of one example.
        levels: L, the number of noise levels.
        sigma_min: σ_L.
        sigma_max: σ_1, or None: the training data's largest pairwise distance, set by
            :meth:`init_from_data` (Song & Ermon 2020, technique 1).
        step_size: ε of Algorithm 1 (α_i = ε σ_i²/σ_L²); steps_per_level: its T.
        denoise: end sampling with the Tweedie step x + σ_L² s_θ(x, σ_L).
        clip: box for the denoised samples (images in [-1, 1]), or None.
        input_scale: the network sees x̃ / sqrt(1 + σ²) instead of x̃ (see :meth:`eps`).

    Example::

        model = NCSN(TimeMLP(2), (2,), sigma_max=8.0)
        loss = model.loss(x, generator=g)            # the lecture's training loop, one step
        x = model.sample(1000, generator=g)          # Algorithm 1 + denoising
    """

    samplers = ("annealed_langevin",)
    default_sampler = "annealed_langevin"

    def __init__(
        self,
        eps_model: nn.Module,
        event_shape: tuple[int, ...],
        *,
        levels: int = 10,
        sigma_min: float = 0.01,
        sigma_max: float | None = None,
        step_size: float = 2e-5,
        steps_per_level: int = 100,
        denoise: bool = True,
        clip: tuple[float, float] | None = None,
        input_scale: bool = False,
    ):
        super().__init__()
        self.event_shape = tuple(event_shape)
        self.input_scale = bool(input_scale)
        self.eps_model = eps_model
        if sigma_max is not None:
            NoiseLevels.geometric(sigma_max, sigma_min, levels)  # validates
        elif isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
            raise ValueError(f"levels must be an integer >= 2, got {levels!r}")
        if not 0 < sigma_min < math.inf:
            raise ValueError(f"sigma_min must be positive, got {sigma_min}")
        if not 0 < step_size < math.inf:
            raise ValueError(f"step_size (ε) must be positive, got {step_size}")
        if isinstance(steps_per_level, bool) or steps_per_level < 1:
            raise ValueError(f"steps_per_level must be >= 1, got {steps_per_level}")
        self.num_levels, self.sigma_min = levels, float(sigma_min)
        self.step_size, self.steps_per_level = float(step_size), int(steps_per_level)
        self.denoise, self.clip = denoise, clip
        # σ_1..σ_L (a buffer: checkpoints carry a σ_1 measured from the data); NaN until set
        s = math.nan if sigma_max is None else sigma_max
        self.register_buffer("sigmas", torch.full((levels,), s))
        if sigma_max is not None:
            self._set_sigmas(sigma_max)

    def _set_sigmas(self, sigma_max: float) -> None:
        lv = NoiseLevels.geometric(sigma_max, self.sigma_min, self.num_levels)
        self.sigmas.copy_(lv.sigmas.to(self.sigmas))

    @property
    def noise(self) -> NoiseLevels:
        """The levels as a :class:`NoiseLevels` process (float64)."""
        if not bool(torch.isfinite(self.sigmas).all()):
            raise RuntimeError(
                "the NCSN's σ_1 is not set: give sigma_max, or call init_from_data(x) first "
                "(genmodels.train.fit does)"
            )
        return NoiseLevels(self.sigmas.double().cpu())

    def init_from_data(self, x: Tensor) -> None:
        """σ_1 from the data's largest pairwise distance, unless sigma_max was given."""
        _check(x, self.event_shape)
        if not bool(torch.isfinite(self.sigmas).all()):
            d = max_pairwise_distance(x)
            if not d > self.sigma_min:
                raise ValueError(
                    f"the data's largest pairwise distance {d:.4g} is not above sigma_min "
                    f"{self.sigma_min}: give sigma_max"
                )
            self._set_sigmas(d)

    def eps(self, x: Tensor, t_net: Tensor) -> Tensor:
        """The ε-network as the loss and the samplers call it: ε_θ(c(σ) x̃, t_net).

        c(σ) = 1 without ``input_scale``; with it c(σ) = 1/sqrt(1 + σ²), σ = σ(t_net/999),
        so x̃ = x + σz has about unit scale at every level for data of unit scale (the
        input scaling c_in of Karras et al. 2022, "Elucidating the design space of
        diffusion-based generative models", with σ_data = 1; it is how a DDPM's network sees
        the same x̃, since x_VP = x_VE / sqrt(1 + σ²), Song et al. 2021). Without it the
        network must map inputs of scale σ_1 (the data's diameter) to ε̂ ≈ (x̃ - μ)/σ, which
        a small MLP fits poorly (docs/score.md, "Digits").
        """
        if not self.input_scale:
            return self.eps_model(x, t_net)
        sigma = self.noise.sigma(t_net.detach().double().cpu() / NET_TIME_SCALE)
        c = (1 + sigma.square()).rsqrt().to(x.device, x.dtype)
        return self.eps_model(x * c.reshape(c.shape + (1,) * (x.dim() - c.dim())), t_net)

    def score(self, x: Tensor, level: int | Tensor) -> Tensor:
        """s_θ(x, σ_i) for level index ``level`` ∈ 0..L-1 (σ_1 is index 0), ``(n, ...)``."""
        noise = self.noise
        i = torch.as_tensor(level, device=x.device).long().expand(x.shape[0])
        t = 1 - i.double() / (len(noise) - 1)
        sig = self.sigmas[i].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return self.eps(x, noise.net_time(t).to(x.device)) / -sig

    def loss(self, batch: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The lecture's training step: pick σ_i (uniformly, per example), perturb
        x̃ = x + σ_i z, and return the DSM loss with λ(σ) = σ² (:func:`dsm_loss`)."""
        _check(batch, self.event_shape)
        noise = self.noise  # raises while σ_1 is unset
        n, L = batch.shape[0], len(noise)
        i = torch.randint(0, L, (n,), generator=generator, device=batch.device)  # 1: pick σ_i
        t_net = noise.net_time(1 - i.double() / (L - 1)).to(batch.device)
        sigma = self.sigmas[i].to(batch.dtype)

        def score(x_tilde, s):
            return self.eps(x_tilde, t_net) / -s.view(-1, *([1] * (x_tilde.dim() - 1)))

        return dsm_loss(score, batch, sigma, generator=generator)  # 2-3: perturb, DSM

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        sampler: str = "annealed_langevin",
        steps: int | None = None,
        return_chain: bool = False,
        progress: bool = False,
        **options,
    ):
        """Draw ``n`` samples ``(n, *event_shape)`` by annealed Langevin dynamics.

        x̃_0 ~ N(0, σ_1² I) (Algorithm 1's "initialise"; σ_1 is the data's diameter, so this
        is close to the σ_1-perturbed data), then L levels of ``steps`` (default
        ``steps_per_level``) Langevin steps and the denoising step.

        Args:
            sampler: ``"annealed_langevin"`` (a VE sampler of :data:`SAMPLERS`).
            steps: T, Langevin steps per level.
            return_chain: also return ``[(σ_i, x after level i)]`` (the lecture's Figure 4),
                and ``(σ_L, denoised)`` last when ``denoise``.
            progress: a tqdm bar over the levels.
            options: passed to the sampler (``step_size``, ``ts``, ``denoise``, ``stats``).
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if sampler not in self.samplers:
            raise ValueError(f"ncsn samples with {', '.join(self.samplers)}; got {sampler!r}")
        noise = self.noise
        p = next(self.parameters(), None)
        dev = p.device if p is not None else self.sigmas.device
        dtype = p.dtype if p is not None else torch.float32
        x = torch.randn((n, *self.event_shape), generator=generator, device=dev, dtype=dtype)
        x = x * float(noise.sigmas[0])
        opts = dict(options)
        opts.setdefault("step_size", self.step_size)
        opts.setdefault("denoise", self.denoise)
        opts.setdefault("clip", self.clip)
        opts["steps"] = self.steps_per_level if steps is None else steps
        chain, callbacks, bar = [], [], None
        if return_chain:
            callbacks.append(lambda d: chain.append((d["sigma"], d["x"].clone())))
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc=f"annealed Langevin, n={n}", total=len(noise))
            callbacks.append(lambda d: bar.update())
        if callbacks:
            opts["callback"] = lambda d: [c(d) for c in callbacks]
        try:
            out = SAMPLERS[sampler](self.eps, x, noise, generator=generator, **opts)
        finally:
            if bar is not None:
                bar.close()
        if return_chain:
            if opts["denoise"]:
                chain.append((chain[-1][0], out.clone()))
            return out, chain
        return out

    def extra_repr(self) -> str:
        return (
            f"levels={self.num_levels}, sigma_min={self.sigma_min}, input_scale={self.input_scale}"
        )


def _check(x: Tensor, event_shape: tuple[int, ...]) -> None:
    if not isinstance(x, Tensor) or tuple(x.shape[1:]) != event_shape or x.dim() < 2:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x)
        raise ValueError(f"x must have shape (n, {', '.join(map(str, event_shape))}), got {shape}")


# ---------------------------------------------------------------------------
# Registry entry.
# ---------------------------------------------------------------------------


@dataclass
class NCSNConfig:
    """Hyper-parameters of ``genmodels train ncsn`` (``--set model.key=value``).

    ``levels``, ``sigma_min``, ``sigma_max`` (None: the data's largest pairwise distance),
    ``step_size`` (ε) and ``steps_per_level`` (T) are the NCSN's (module docstring); the
    network fields mean what they mean for :class:`~genmodels.models.ddpm.DDPMConfig`
    (:func:`genmodels.nn.time_network`). ``levels=None`` and ``step_size=None`` take the
    measured defaults for the data kind (docs/score.md): points L = 10, ε = 2e-5; images
    L = 30 and ε = 3.3e-6, where Song & Ermon 2020's technique 4 puts the variance ratio of
    the last level's chain nearest 1 for T = 100 and γ = σ_{i-1}/σ_i = 1.27 (1.017; 1.11 at
    2e-5). ``input_scale`` (:meth:`NCSN.eps`): the network sees x̃/sqrt(1 + σ²).

    A run's ``config.json`` written before ``input_scale`` existed (every other field present,
    that one absent) loads with ``input_scale=False``, the network it trained.
    """

    levels: int | None = None
    sigma_min: float = 0.01
    sigma_max: float | None = None
    step_size: float | None = None
    steps_per_level: int = 100
    denoise: bool = True
    input_scale: bool = True
    net: str = "auto"
    width: int | None = None
    depth: int | None = None
    mults: tuple[int, ...] = (1, 2, 2)
    emb_dim: int = 128
    activation: str = "silu"

    def validate(self) -> None:
        if self.levels is not None and self.levels < 2:
            raise ValueError(f"levels must be >= 2, got {self.levels}")
        if not self.sigma_min > 0:
            raise ValueError(f"sigma_min must be positive, got {self.sigma_min}")
        if self.sigma_max is not None and not self.sigma_max > self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got {self.sigma_max}")
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size (ε) must be positive, got {self.step_size}")
        if self.steps_per_level < 1:
            raise ValueError(f"steps_per_level must be >= 1, got {self.steps_per_level}")

    @staticmethod
    def upgrade_fields(old: dict) -> dict:
        """An old run's ``config.json`` (all the fields but ``input_scale``): unscaled input."""
        if "input_scale" not in old and _FIELDS_BEFORE_INPUT_SCALE <= set(old):
            return {**old, "input_scale": False}
        return old


_FIELDS_BEFORE_INPUT_SCALE = {
    "levels", "sigma_min", "sigma_max", "step_size", "steps_per_level", "denoise", "net",
    "width", "depth", "mults", "emb_dim", "activation",
}  # fmt: skip
_DEFAULT_LEVELS = {"points": 10, "images": 30}
_DEFAULT_STEP_SIZE = {"points": 2e-5, "images": 3.3e-6}


@register(
    "ncsn",
    config=NCSNConfig,
    default_data="8gaussians",
    description="noise-conditional score network (Song & Ermon 2019): DSM, annealed Langevin",
    task="density",
    section=6,
    data_kinds=("points", "images"),
)
def build_ncsn(config: NCSNConfig, info: DataInfo) -> NCSN:
    """An NCSN with the ε-network :func:`genmodels.nn.time_network` picks for the data's
    shape; images live in [-1, 1] and the denoised samples are clipped to it."""
    if info.kind not in ("points", "images"):
        raise ValueError(f"ncsn has no default network for {info.kind} data")
    config.validate()
    net = time_network_for(info.event_shape, config)
    return NCSN(
        net,
        info.event_shape,
        levels=config.levels or _DEFAULT_LEVELS[info.kind],
        sigma_min=config.sigma_min,
        sigma_max=config.sigma_max,
        step_size=config.step_size or _DEFAULT_STEP_SIZE[info.kind],
        steps_per_level=config.steps_per_level,
        denoise=config.denoise,
        clip=(-1.0, 1.0) if info.kind == "images" else None,
        input_scale=config.input_scale,
    )
