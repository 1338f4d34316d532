"""What the lecture says, section by section, and the lecture's pictures that need no training.

For each of the seven sections of the lecture (``shared/seed``): a title, a short text, the key
equations as MathML (hand-written ``<math>`` markup, so the report page renders them offline,
without a network or a script) and the papers, cited as text. Where a slide writes an equation
with a slip (docs/design.md, "Known slips"), the papers' correct form is the one written here.

The pictures here need no trained model: every score and density in them is closed-form.

- Section 5: Brownian motion sample paths (W(t) - W(s) ~ N(0, σ²(t - s))) and a Gaussian
  process's prior and posterior sample paths, the lecture's "each sampled path is one function".
- Section 6: Langevin vs annealed Langevin dynamics on a two-mode mixture with unequal weights,
  Song & Ermon (2019)'s Figure 3: plain Langevin keeps the split of its initial points (the
  modes are too far apart to mix), annealed Langevin recovers the weights.
- Section 7: the score-SDE paper's Figure 2 (Song et al. 2021): forward SDE, reverse SDE and
  probability-flow-ODE paths on a 1-D Gaussian mixture, whose perturbed density p_t and score
  ∇ log p_t are closed-form under every SDE here (rows: VP, and VE with σ_max = 5).

:func:`make_figures` writes the pictures of the chosen sections as PNGs; each picture function
is seeded and draws on matplotlib's Agg canvas (no pyplot state, no display).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from ..inference.mcmc import ula
from ..integrate import sdeint
from ..integrate.brownian import BrownianMotion
from ..models.gp import GP, RBF
from ..models.samplers import annealed_langevin, euler_maruyama, ode
from ..models.score import NoiseLevels, score_model
from ..models.sde import SDE, VESDE, VPSDE, SubVPSDE, gaussian_mixture_marginal
from ..plot.paths import plot_paths

__all__ = [
    "Equation",
    "Section",
    "SECTIONS",
    "FIGURES",
    "make_figures",
    "mixture_score",
    "langevin_demo",
    "score_sde_paths",
    "mixture_moments",
    "FIGURE2_SDES",
    "brownian_paths_figure",
    "gp_paths_figure",
    "langevin_figure",
    "score_sde_figure",
]


# ---------------------------------------------------------------------------------------------
# MathML, written by hand through a few tag helpers (MathML Core: renders in Chromium/Firefox).
# ---------------------------------------------------------------------------------------------


_FUNCTIONS = ("log", "exp", "det", "tr")
_LARGE = {"∑": "1.3em", "∫": "1.6em", "⨁": "1.3em"}


def _tok(s: str) -> str:
    """One token: a number -> <mn>, a word or letter -> <mi>, anything else -> <mo>; a string
    that already is markup (starts with '<') passes through."""
    if s.startswith("<"):
        return s
    if s.replace(".", "", 1).isdigit():
        return f"<mn>{escape(s)}</mn>"
    if s in _FUNCTIONS:  # an upright name with a thin space after it, as TeX's \\log
        return f'<mi>{s}</mi><mspace width="0.17em"/>'
    if s in _LARGE:  # sized by CSS, not by a math font's glyph variants (often not installed)
        return f'<mo largeop="false" style="font-size:{_LARGE[s]}">{s}</mo>'
    if s.isalpha() or (s[0].isalpha() and s[1:].isdigit()):
        return f"<mi>{escape(s)}</mi>"
    return f"<mo>{escape(s)}</mo>"


def _x(*parts: str) -> str:
    """Space-separated tokens (see :func:`_tok`) and ready markup, in one row's content."""
    out = []
    for p in parts:
        out += [p] if p.startswith("<") else [_tok(t) for t in p.split()]
    return "".join(out)


def _row(*parts: str) -> str:
    return f"<mrow>{_x(*parts)}</mrow>"


def _sub(base: str, sub: str) -> str:
    return f"<msub>{_row(base)}{_row(sub)}</msub>"


def _sup(base: str, sup: str) -> str:
    return f"<msup>{_row(base)}{_row(sup)}</msup>"


def _subsup(base: str, sub: str, sup: str) -> str:
    return f"<msubsup>{_row(base)}{_row(sub)}{_row(sup)}</msubsup>"


def _under(base: str, under: str) -> str:
    return f"<munder>{_row(base)}{_row(under)}</munder>"


def _underover(base: str, under: str, over: str) -> str:
    return f"<munderover>{_row(base)}{_row(under)}{_row(over)}</munderover>"


def _abs(*parts: str) -> str:
    """|...| in its own row: the bars are then prefix and postfix fences (no operator space),
    unlike the infix bar of a conditional p(x | y)."""
    return f"<mrow><mo>|</mo>{_x(*parts)}<mo>|</mo></mrow>"


def _frac(num: str, den: str) -> str:
    return f"<mfrac>{_row(num)}{_row(den)}</mfrac>"


def _sqrt(x: str) -> str:
    return f"<msqrt>{_row(x)}</msqrt>"


def _accent(x: str, mark: str) -> str:
    return f'<mover accent="true">{_row(x)}<mo>{mark}</mo></mover>'


def _text(s: str) -> str:
    return f"<mtext>{escape(s)}</mtext>"


def _sp(em: float = 1.0) -> str:
    return f'<mspace width="{em}em"/>'


def _math(*parts: str) -> str:
    return f'<math display="block">{_row(*parts)}</math>'


_BAR_ALPHA = _accent("α", "¯")
_TILDE_X = _accent("x", "˜")
_NORMAL = "<mi>𝒩</mi>"
_EYE = "<mi>𝐈</mi>"
_GRAD = _sub("∇", "x")
_E = "<mi>𝔼</mi>"
_YP = "<msup><mi>y</mi><mo>′</mo></msup>"  # y′


def _E_sub(sub: str) -> str:
    return _sub(_E, sub)


def _int(lo: str, hi: str) -> str:
    return _subsup("∫", lo, hi)


# ---------------------------------------------------------------------------------------------
# The sections
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equation:
    """One displayed equation: what it says (plain text) and its MathML ``<math>`` element."""

    caption: str
    mathml: str


@dataclass(frozen=True)
class Section:
    """One lecture section: number, title, a short text, the equations, the papers (as text)."""

    number: int
    title: str
    text: str
    equations: tuple[Equation, ...]
    citations: tuple[str, ...]


_S1 = Section(
    1,
    "Variational inference",
    "Bayes' rule gives the posterior p(θ|D), but its evidence p(D) is an integral over every θ. "
    "Variational inference replaces the integral by an optimisation: pick q from a family Q "
    "closest in KL to the posterior, equivalently maximise the evidence lower bound (ELBO). "
    "A variational autoencoder amortises q over examples with an encoder q_φ(z|x) and trains "
    "the decoder p_θ(x|z) on the same bound; its NLL is reported as a bound.",
    (
        Equation(
            "Bayes' rule: posterior = likelihood × prior / evidence",
            _math("p ( θ | D ) =", _frac("p ( D | θ ) p ( θ )", "p ( D )")),
        ),
        Equation(
            "The ELBO: log p(D) minus the ELBO is KL[q ‖ p(θ|D)] ≥ 0 (the slide writes the "
            "left side as log p(x))",
            _math(
                "log p ( D ) ≥",
                _E_sub("θ ∼ q ( θ )"),
                "[ log p ( θ , D ) ] −",
                _E_sub("θ ∼ q ( θ )"),
                "[ log q ( θ ) ]",
            ),
        ),
        Equation(
            "The VAE's per-example bound (Kingma & Welling 2014)",
            _math(
                "log",
                _sub("p", "θ"),
                "( x ) ≥",
                _E_sub(_x(_sub("q", "φ"), "( z | x )")),
                "[ log",
                _sub("p", "θ"),
                "( x | z ) ] −",
                _sub("D", "KL"),
                "[",
                _sub("q", "φ"),
                "( z | x ) ‖ p ( z ) ]",
            ),
        ),
    ),
    (
        "Blei, Kucukelbir & McAuliffe (2017), Variational Inference: A Review for Statisticians, "
        "JASA.",
        "Kingma & Welling (2014), Auto-Encoding Variational Bayes, ICLR.",
        "Rezende, Mohamed & Wierstra (2014), Stochastic Backpropagation and Approximate "
        "Inference in Deep Generative Models, ICML.",
    ),
)

_S2 = Section(
    2,
    "Generative vs discriminative models",
    "A discriminative model fits p(y|x) only. A generative model fits the joint p(x, y) and "
    "gets p(y|x) by Bayes' rule, so it also knows p(x): a confident p(y|x) where p(x) is low "
    "is an uncertain decision. The flow classifier fits one normalizing flow per class; "
    "logistic regression and an MLP are the discriminative baselines.",
    (
        Equation(
            "The joint factorises through the class posterior and the data density",
            _math("p ( x , y ) = p ( y | x ) p ( x )"),
        ),
        Equation(
            "A generative classifier: class-conditional densities p(x|y) and Bayes' rule",
            _math(
                "p ( y | x ) =",
                _frac(
                    "p ( x | y ) p ( y )",
                    _x(_under("∑", _YP), "p ( x |", _YP, ") p (", _YP, ")"),
                ),
            ),
        ),
    ),
    (
        "Ng & Jordan (2002), On Discriminative vs. Generative Classifiers: A Comparison of "
        "Logistic Regression and Naive Bayes, NeurIPS.",
        "Nalisnick, Matsukawa, Teh, Gorur & Lakshminarayanan (2019), Hybrid Models with Deep "
        "and Invertible Features, ICML.",
    ),
)

_S3 = Section(
    3,
    "Flow-based models",
    "An invertible map f from a simple base density to the data gives an exact likelihood by "
    "the change of variables; a chain of K maps adds their log-determinants. Coupling layers "
    "keep half the coordinates and transform the other half conditioned on them, so the "
    "Jacobian is triangular: NICE adds a shift (det J = 1), Real NVP scales and shifts, neural "
    "spline flows use monotone rational-quadratic splines.",
    (
        Equation(
            "Change of variables, x = f(z)",
            _math(
                _sub("p", "x"),
                "( x ) =",
                _sub("p", "z"),
                "(",
                _sup("f", "−1"),
                "( x ) )",
                _sup(
                    _abs("det", _sub("J", "f"), "(", _sup("f", "−1"), "( x ) )"),
                    "−1",
                ),
            ),
        ),
        Equation(
            "A chain x = f_K ∘ … ∘ f_1(z_0): the log-likelihood the flows maximise",
            _math(
                "log p ( x ) = log",
                _sub("p", "z"),
                "(",
                _sub("z", "0"),
                ") −",
                _underover("∑", "i = 1", "K"),
                "log",
                _abs("det", _frac(_x("∂", _sub("f", "i")), _x("∂", _sub("z", "i − 1")))),
            ),
        ),
        Equation(
            "Affine coupling (Real NVP): keep x_a, scale and shift x_b; NICE has s ≡ 0",
            _math(
                _sub("y", "a"),
                "=",
                _sub("x", "a"),
                ",",
                _sp(),
                _sub("y", "b"),
                "= exp ( s (",
                _sub("x", "a"),
                ") ) ⊙",
                _sub("x", "b"),
                "+ t (",
                _sub("x", "a"),
                ")",
            ),
        ),
        Equation(
            "Its Jacobian is triangular: the log-determinant is a sum, no D×D determinant",
            _math(
                "log",
                _abs("det", _frac(_x("∂ y"), _x("∂ x"))),
                "=",
                _under("∑", "j"),
                "s",
                _sub(_x("(", _sub("x", "a"), ")"), "j"),
            ),
        ),
    ),
    (
        "Dinh, Krueger & Bengio (2015), NICE: Non-linear Independent Components Estimation, "
        "ICLR workshop.",
        "Dinh, Sohl-Dickstein & Bengio (2017), Density Estimation using Real NVP, ICLR.",
        "Durkan, Bekasov, Murray & Papamakarios (2019), Neural Spline Flows, NeurIPS.",
        "Papamakarios, Nalisnick, Rezende, Mohamed & Lakshminarayanan (2021), Normalizing Flows "
        "for Probabilistic Modeling and Inference, JMLR.",
    ),
)

_S4 = Section(
    4,
    "Neural ODEs",
    "A residual block z_{t+1} = z_t + f(z_t, θ_t) is one Euler step of dz/dt = f(z, t, θ); an "
    "ODE network lets a solver take the steps, and the adjoint ODE gives gradients in constant "
    "memory. The same field moves a density (a continuous normalizing flow, whose "
    "log-density changes by minus the trace of the Jacobian), a latent state between irregular "
    "observations (latent ODE), or a state driven by a data path X (neural CDE).",
    (
        Equation(
            "The ODE network's forward pass",
            _math(
                "z (",
                _sub("t", "1"),
                ") = z (",
                _sub("t", "0"),
                ") +",
                _int(_sub("t", "0"), _sub("t", "1")),
                "f ( z ( t ) , t , θ ) d t",
            ),
        ),
        Equation(
            "The adjoint a(t) = ∂L/∂z(t), solved backwards (Chen et al. 2018, Algorithm 1)",
            _math(
                _frac("d a ( t )", "d t"),
                "= −",
                _sup("a ( t )", "⊤"),
                _frac("∂ f", "∂ z"),
                ",",
                _sp(),
                _frac("d L", "d θ"),
                "= −",
                _int(_sub("t", "1"), _sub("t", "0")),
                _sup("a ( t )", "⊤"),
                _frac("∂ f", "∂ θ"),
                "d t",
            ),
        ),
        Equation(
            "Instantaneous change of variables (continuous normalizing flows, FFJORD)",
            _math(
                _frac("∂ log p ( z ( t ) )", "∂ t"),
                "= − tr (",
                _frac("∂ f", "∂ z ( t )"),
                ")",
            ),
        ),
        Equation(
            "A neural controlled differential equation, driven by the data path X",
            _math(
                _sub("z", "t"),
                "=",
                _sub("z", _sub("t", "0")),
                "+",
                _int(_sub("t", "0"), "t"),
                _sub("f", "θ"),
                "(",
                _sub("z", "s"),
                ") d",
                _sub("X", "s"),
            ),
        ),
    ),
    (
        "He, Zhang, Ren & Sun (2016), Deep Residual Learning for Image Recognition, CVPR.",
        "Chen, Rubanova, Bettencourt & Duvenaud (2018), Neural Ordinary Differential Equations, "
        "NeurIPS.",
        "Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud (2019), FFJORD: Free-form "
        "Continuous Dynamics for Scalable Reversible Generative Models, ICLR.",
        "Rubanova, Chen & Duvenaud (2019), Latent ODEs for Irregularly-Sampled Time Series, "
        "NeurIPS.",
        "Kidger, Morrill, Foster & Lyons (2020), Neural Controlled Differential Equations for "
        "Irregular Time Series, NeurIPS.",
    ),
)

_S5 = Section(
    5,
    "Stochastic processes: GPs, neural processes, neural ODE processes",
    "A stochastic process is a distribution over functions: each sampled path is one function. "
    "Brownian motion has independent Gaussian increments; a Gaussian process makes every "
    "finite set of values jointly Gaussian, with a kernel k as covariance, and conditions "
    "exactly on observations. A conditional neural process learns the map from a context set "
    "to a predictive distribution (encode, aggregate, decode); a neural process adds a global "
    "latent variable; a neural ODE process makes the decoder's latent state follow an ODE.",
    (
        Equation(
            "Brownian motion (the Wiener process), parameter σ²: independent Gaussian increments",
            _math(
                "W ( 0 ) = 0 ,",
                _sp(),
                "W ( t ) − W ( s ) ∼",
                _NORMAL,
                "( 0 ,",
                _sup("σ", "2"),
                "( t − s ) )",
            ),
        ),
        Equation(
            "A Gaussian process: every finite marginal is Gaussian, with K_ij = k(t_i, t_j)",
            _math(
                "f ∼ GP ( m , k )",
                _sp(),
                "⇔",
                _sp(),
                "( f (",
                _sub("t", "1"),
                ") , … , f (",
                _sub("t", "n"),
                ") ) ∼",
                _NORMAL,
                "( m , K )",
            ),
        ),
        Equation(
            "A conditional neural process: encode each context pair, aggregate, decode",
            _math(
                "r =",
                _under("⨁", "i"),
                _sub("h", "θ"),
                "(",
                _sub("x", "i"),
                ",",
                _sub("y", "i"),
                ") ,",
                _sp(),
                _sub("φ", "j"),
                "=",
                _sub("g", "θ"),
                "(",
                _sub("x", "j"),
                ", r )",
            ),
        ),
        Equation(
            "A neural ODE process's latent state, with d ∼ q_D(d | C) from the context",
            _math(
                "l ( t ) = l (",
                _sub("t", "0"),
                ") +",
                _int(_sub("t", "0"), "t"),
                _sub("f", "θ"),
                "( l ( s ) , d , s ) d s",
            ),
        ),
    ),
    (
        "Rasmussen & Williams (2006), Gaussian Processes for Machine Learning, MIT Press.",
        "Garnelo, Rosenbaum, Maddison, Ramalho, Saxton, Shanahan, Teh, Rezende & Eslami (2018), "
        "Conditional Neural Processes, ICML.",
        "Garnelo, Schwarz, Rosenbaum, Viola, Rezende, Eslami & Teh (2018), Neural Processes, "
        "ICML workshop.",
        "Norcliffe, Bodnar, Day, Moss & Liò (2021), Neural ODE Processes, ICLR.",
    ),
)

_S6 = Section(
    6,
    "Score matching",
    "A score network s_θ(x) ≈ ∇_x log p(x) needs no normaliser. Denoising score matching "
    "learns it by regressing onto the score of a Gaussian corruption; Langevin dynamics turns "
    "a score into samples. Far-apart modes do not mix under plain Langevin and low-density "
    "regions have poorly learnt scores, so NCSN perturbs the data at a ladder of noise levels "
    "σ_1 > … > σ_L and anneals Langevin dynamics down the ladder. (The slides drop the sign and "
    "the square root of the Langevin step; the correct form is below.)",
    (
        Equation(
            "Langevin dynamics (the unadjusted Langevin algorithm)",
            _math(
                _sub("x", "k + 1"),
                "=",
                _sub("x", "k"),
                "+",
                _frac("ε", "2"),
                _GRAD,
                "log p (",
                _sub("x", "k"),
                ") +",
                _sqrt("ε"),
                _sub("z", "k"),
                ",",
                _sp(),
                _sub("z", "k"),
                "∼",
                _NORMAL,
                "( 0 ,",
                _EYE,
                ")",
            ),
        ),
        Equation(
            "Denoising score matching (Vincent 2011), x̃ = x + σ z",
            _math(
                _sub("J", "DSM"),
                "( θ ) =",
                _E_sub(_x(_sub("q", "σ"), "(", _TILDE_X, ", x )")),
                "[",
                _frac("1", "2"),
                _sup(
                    _x(
                        "‖",
                        _sub("s", "θ"),
                        "(",
                        _TILDE_X,
                        ", σ ) −",
                        _frac(_x("x −", _TILDE_X), _sup("σ", "2")),
                        "‖",
                    ),
                    "2",
                ),
                "]",
            ),
        ),
        Equation(
            "Annealed Langevin dynamics: T steps at each level, step size scaled by the level",
            _math(
                _sub("α", "i"),
                "= ε",
                _frac(_subsup("σ", "i", "2"), _subsup("σ", "L", "2")),
                ",",
                _sp(),
                _sub(_TILDE_X, "t"),
                "=",
                _sub(_TILDE_X, "t − 1"),
                "+",
                _frac(_sub("α", "i"), "2"),
                _sub("s", "θ"),
                "(",
                _sub(_TILDE_X, "t − 1"),
                ",",
                _sub("σ", "i"),
                ") +",
                _sqrt(_sub("α", "i")),
                _sub("z", "t"),
            ),
        ),
    ),
    (
        "Hyvärinen (2005), Estimation of Non-Normalized Statistical Models by Score Matching, "
        "JMLR.",
        "Vincent (2011), A Connection Between Score Matching and Denoising Autoencoders, "
        "Neural Computation.",
        "Roberts & Tweedie (1996), Exponential Convergence of Langevin Distributions and Their "
        "Discrete Approximations, Bernoulli.",
        "Song & Ermon (2019), Generative Modeling by Estimating Gradients of the Data "
        "Distribution, NeurIPS.",
    ),
)

_S7 = Section(
    7,
    "Diffusion models and score SDEs",
    "A diffusion model is a latent-variable model whose encoder is fixed: T small Gaussian "
    "steps that turn data into noise. DDPM learns to undo them by predicting the added noise, a "
    "reweighted ELBO. As the steps shrink the chain becomes an SDE; running it backwards needs "
    "only the score ∇ log p_t, and the probability flow ODE has the same marginals p_t, a "
    "deterministic sampler and an exact likelihood. VP (DDPM's limit), sub-VP and VE (NCSN's "
    "limit) differ only in f and g.",
    (
        Equation(
            "The forward process in one jump (Ho et al. 2020)",
            _math(
                "q (",
                _sub("x", "t"),
                "|",
                _sub("x", "0"),
                ") =",
                _NORMAL,
                "(",
                _sub("x", "t"),
                ";",
                _sqrt(_sub(_BAR_ALPHA, "t")),
                _sub("x", "0"),
                ", ( 1 −",
                _sub(_BAR_ALPHA, "t"),
                ")",
                _EYE,
                ")",
            ),
        ),
        Equation(
            "DDPM's simple loss: predict the noise",
            _math(
                _sub("L", "simple"),
                "=",
                _E_sub(_x("t ,", _sub("x", "0"), ", ε")),
                _sup(
                    _x(
                        "‖ ε −",
                        _sub("ε", "θ"),
                        "(",
                        _sqrt(_sub(_BAR_ALPHA, "t")),
                        _sub("x", "0"),
                        "+",
                        _sqrt(_x("1 −", _sub(_BAR_ALPHA, "t"))),
                        "ε , t ) ‖",
                    ),
                    "2",
                ),
            ),
        ),
        Equation(
            "Forward SDE (VP: f = −½β(t)x, g = √β(t))",
            _math("d x = f ( x , t ) d t + g ( t ) d w"),
        ),
        Equation(
            "Reverse-time SDE (Anderson 1982)",
            _math(
                "d x = [ f ( x , t ) −",
                _sup("g ( t )", "2"),
                _GRAD,
                "log",
                _sub("p", "t"),
                "( x ) ] d t + g ( t ) d",
                _accent("w", "¯"),
            ),
        ),
        Equation(
            "Probability flow ODE: the same marginals p_t, deterministic",
            _math(
                _frac("d x", "d t"),
                "= f ( x , t ) −",
                _frac("1", "2"),
                _sup("g ( t )", "2"),
                _GRAD,
                "log",
                _sub("p", "t"),
                "( x )",
            ),
        ),
    ),
    (
        "Sohl-Dickstein, Weiss, Maheswaranathan & Ganguli (2015), Deep Unsupervised Learning "
        "using Nonequilibrium Thermodynamics, ICML.",
        "Ho, Jain & Abbeel (2020), Denoising Diffusion Probabilistic Models, NeurIPS.",
        "Anderson (1982), Reverse-Time Diffusion Equation Models, Stochastic Processes and "
        "their Applications.",
        "Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole (2021), Score-Based Generative "
        "Modeling through Stochastic Differential Equations, ICLR.",
    ),
)

SECTIONS: dict[int, Section] = {s.number: s for s in (_S1, _S2, _S3, _S4, _S5, _S6, _S7)}
"""The seven lecture sections by number."""


# ---------------------------------------------------------------------------------------------
# Closed-form pieces
# ---------------------------------------------------------------------------------------------


def mixture_score(x: Tensor, weights: Tensor, means: Tensor, var: float | Tensor) -> Tensor:
    """∇_x log p(x) of p = Σ_k w_k N(μ_k, v I): ``-Σ_k r_k(x) (x - μ_k) / v`` with the
    responsibilities r_k(x) = w_k N(x; μ_k, v I) / p(x).

    Perturbing such data by N(0, σ² I) keeps it a mixture with v + σ²: the exact score at every
    noise level of annealed Langevin. ``x``: ``(n, D)``; ``means``: ``(K, D)``; returns
    ``(n, D)``.
    """
    w = torch.as_tensor(weights, dtype=x.dtype)
    mu = torch.as_tensor(means, dtype=x.dtype)
    diff = x.unsqueeze(1) - mu  # (n, K, D)
    logits = w.log() - 0.5 * diff.square().sum(-1) / var
    r = logits.softmax(1)
    return -(r.unsqueeze(-1) * diff).sum(1) / var


# Song & Ermon (2019), Figure 3: 1/5 N((-5,-5), I) + 4/5 N((5,5), I).
_LANGEVIN_WEIGHTS = torch.tensor([0.2, 0.8], dtype=torch.float64)
_LANGEVIN_MEANS = torch.tensor([[-5.0, -5.0], [5.0, 5.0]], dtype=torch.float64)


def langevin_demo(n: int = 1280, *, seed: int = 0) -> dict[str, Tensor]:
    """Samples of Song & Ermon (2019)'s Figure 3: exact, Langevin and annealed Langevin.

    Data 1/5 N((-5,-5), I) + 4/5 N((5,5), I) with its closed-form score; both chains start
    from the same ``n`` points uniform on [-8, 8]². Langevin: 1000 ULA steps with ε = 0.1 on
    the data score. Annealed Langevin: the lecture's Algorithm 1 with L = 10 levels
    geometric from σ_1 = 20 to σ_L = 1, T = 100 steps each, ε = 0.1, on the exact score of
    the data convolved with N(0, σ_i² I). Returns ``{"exact", "langevin", "annealed"}``, each
    ``(n, 2)`` float64.
    """
    g = torch.Generator().manual_seed(seed)
    w, mu = _LANGEVIN_WEIGHTS, _LANGEVIN_MEANS
    comp = torch.multinomial(w, n, replacement=True, generator=g)
    exact = mu[comp] + torch.randn(n, 2, generator=g, dtype=torch.float64)
    x0 = torch.rand(n, 2, generator=g, dtype=torch.float64) * 16 - 8
    plain = ula(
        x0,
        0.1,
        1000,
        score=lambda x: mixture_score(x, w, mu, 1.0),
        generator=g,
        keep_chain=False,
    ).x
    levels = NoiseLevels.geometric(20.0, 1.0, 10)
    eps_model = score_model(lambda x, s: mixture_score(x, w, mu, 1.0 + s * s), levels)
    annealed = annealed_langevin(
        eps_model, x0, levels, steps=100, step_size=0.1, denoise=False, generator=g
    )
    return {"exact": exact, "langevin": plain, "annealed": annealed}


# A 1-D two-component mixture for the score-SDE figure.
_SDE_WEIGHTS = torch.tensor([0.35, 0.65], dtype=torch.float64)
_SDE_MEANS = torch.tensor([[-1.4], [1.2]], dtype=torch.float64)
_SDE_STDS = torch.tensor([0.2, 0.3], dtype=torch.float64)

#: The SDEs of the Figure-2 picture, by name: VP and sub-VP as registered (β from 0.1 to 20),
#: and a VE SDE with σ_max = 5 instead of 50, so that its paths fit one readable (t, x) panel
#: (its prior N(0, 25) is still close to p_1 of this mixture: mean 0.29, variance 26.6).
FIGURE2_SDES: dict[str, Callable[[], SDE]] = {
    "vp": VPSDE,
    "subvp": SubVPSDE,
    "ve": lambda: VESDE(sigma_min=0.01, sigma_max=5.0),
}


def _figure2_sde(sde) -> SDE:
    if isinstance(sde, SDE):
        return sde
    if isinstance(sde, str) and sde in FIGURE2_SDES:
        return FIGURE2_SDES[sde]()
    raise ValueError(
        f"sde: expected one of {', '.join(map(repr, FIGURE2_SDES))} or an SDE object, got {sde!r}"
    )


class _ForwardSDE:
    """An :class:`~genmodels.models.sde.SDE` in the solver's protocol (torchsde's f, g)."""

    noise_type, sde_type = "diagonal", "ito"

    def __init__(self, sde):
        self.sde = sde

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self.sde.drift(y, float(t))

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return torch.full_like(y, float(self.sde.diffusion(float(t))))


def score_sde_paths(
    n: int = 2000, *, steps: int = 500, seed: int = 0, sde: str | SDE = "vp"
) -> dict[str, Tensor]:
    """The three processes of Song et al. (2021)'s Figure 2 on a 1-D mixture.

    Data p_0 = 0.35 N(-1.4, 0.2²) + 0.65 N(1.2, 0.3²). Under any SDE here p(x_t | x_0) =
    N(m x_0, σ²), so p_t is the mixture Σ_k w_k N(m μ_k, m² s_k² + σ²) and its score ∇ log p_t
    is exact (:func:`~genmodels.models.sde.gaussian_mixture_marginal`, the helper of the
    2-D benchmarks, here with D = 1).

    - forward: x_0 ~ p_0, Euler–Maruyama on dx = f dt + g dw from t = 0 to 1 (``steps``);
    - reverse: x_1 from the prior (``sde.prior_sample``), Euler–Maruyama on the reverse SDE
      dx = [f - g² ∇log p_t] dt + g dw̄ from 1 to 10⁻³ (``steps``;
      :func:`~genmodels.models.samplers.euler_maruyama`);
    - ode: the same x_1 through the probability flow ODE dx/dt = f - ½ g² ∇log p_t (dopri5;
      :func:`~genmodels.models.samplers.ode`), recorded at 101 times.

    Args:
        n: paths of each process; steps: Euler–Maruyama steps; seed: the one generator.
        sde: ``"vp"`` (default), ``"subvp"``, ``"ve"`` (:data:`FIGURE2_SDES`) or an
            :class:`~genmodels.models.sde.SDE`.

    Returns ``{"t_forward", "forward", "t_reverse", "reverse", "t_ode", "ode"}``: times
    ``(T,)`` and paths ``(T, n)`` (float64), ``"log_prob"``, the exact ``log_prob(x, t)`` of
    p_t, and ``"sde"``, the SDE object.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    sde = _figure2_sde(sde)
    g = torch.Generator().manual_seed(seed)
    log_prob, score = gaussian_mixture_marginal(_SDE_WEIGHTS, _SDE_MEANS, _SDE_STDS, sde)
    comp = torch.multinomial(_SDE_WEIGHTS, n, replacement=True, generator=g)
    x0 = _SDE_MEANS[comp] + _SDE_STDS[comp, None] * torch.randn(
        n, 1, generator=g, dtype=torch.float64
    )
    t_fwd = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    fwd = sdeint(_ForwardSDE(sde), x0, t_fwd, method="euler", dt=1.0 / steps, generator=g)

    x1 = sde.prior_sample((n, 1), generator=g, dtype=torch.float64)
    t_rev = torch.linspace(1.0, 1e-3, steps + 1, dtype=torch.float64)
    rev = [x1.clone()]
    euler_maruyama(
        score, sde, x1, t_rev, generator=g, callback=lambda info: rev.append(info["x"].clone())
    )
    t_ode = torch.linspace(1.0, 1e-3, 101, dtype=torch.float64)
    flow = [x1.clone()]
    ode(score, sde, x1, t_ode, callback=lambda info: flow.append(info["x"].clone()))
    return {
        "t_forward": t_fwd,
        "forward": fwd[..., 0],
        "t_reverse": t_rev,
        "reverse": torch.stack(rev)[..., 0],
        "t_ode": t_ode,
        "ode": torch.stack(flow)[..., 0],
        "log_prob": log_prob,
        "sde": sde,
    }


def mixture_moments() -> tuple[float, float, float]:
    """Mean, variance and the weight of the component at x > 0 of the figure's p_0."""
    w, mu, sd = _SDE_WEIGHTS, _SDE_MEANS[:, 0], _SDE_STDS
    mean = float((w * mu).sum())
    return mean, float((w * (sd**2 + mu**2)).sum()) - mean**2, float(w[1])


# ---------------------------------------------------------------------------------------------
# The pictures
# ---------------------------------------------------------------------------------------------


def _figure(width: float, height: float, cols: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, cols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def brownian_paths_figure(path: Path, *, seed: int = 0) -> Path:
    """Standard Brownian motion: 30 sample paths in the ±2√t envelope, and W(1) of 2000 paths
    against its law N(0, 1)."""
    ts = torch.linspace(0.0, 1.0, 257, dtype=torch.float64)
    w = BrownianMotion(0.0, 1.0, size=(2000,), seed=seed, dtype=torch.float64).path(ts)
    fig, (a, b) = _figure(10, 3.6, 2)
    plot_paths(ts, w, ax=a, band=2.0, max_paths=30, title="30 paths of W(t): each is a function")
    end = w[-1].numpy()
    b.hist(end, bins=40, density=True, color="tab:blue", alpha=0.6, label="W(1), 2000 paths")
    z = np.linspace(-4, 4, 200)
    b.plot(z, np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi), "k", lw=1.2, label="N(0, 1)")
    b.set_xlabel("W(1)")
    b.set_title("W(1) ∼ N(0, σ² t) at t = 1")
    b.legend(frameon=False, loc="upper left")
    return _save(fig, path)


def gp_paths_figure(path: Path, *, seed: int = 0) -> Path:
    """A GP with an RBF kernel (lengthscale 0.15): prior paths, then posterior paths given five
    noisy observations of sin(2πt), with the posterior mean and ±2σ band."""
    g = torch.Generator().manual_seed(seed)
    gp = GP(RBF(lengthscale=0.15, variance=1.0), noise=1e-3)
    t = torch.linspace(0.0, 1.0, 200, dtype=torch.float64)[:, None]
    tc = torch.tensor([[0.1], [0.3], [0.45], [0.7], [0.9]], dtype=torch.float64)
    yc = torch.sin(2 * math.pi * tc) + 0.03 * torch.randn(tc.shape, generator=g, dtype=tc.dtype)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", RuntimeWarning)  # jitter on a dense grid
        prior = gp.sample_paths(t, 6, generator=g)[..., 0]
        post = gp.sample_paths(t, 6, x_context=tc, y_context=yc, generator=g)[..., 0]
        pred = gp.predict(tc, yc, t)
    mu, sd = pred.mean[:, 0].numpy(), pred.stddev[:, 0].numpy()
    tt = t[:, 0].numpy()
    fig, (a, b) = _figure(10, 3.6, 2)
    a.fill_between(tt, -2, 2, color="0.9", label="±2σ prior")
    a.plot(tt, prior.T.numpy(), lw=1)
    a.set_title("GP prior: each sampled path is one function")
    b.fill_between(tt, mu - 2 * sd, mu + 2 * sd, color="tab:blue", alpha=0.15, label="±2σ")
    b.plot(tt, post.T.numpy(), lw=1)
    b.plot(tt, mu, "k--", lw=1, label="posterior mean")
    b.plot(tc[:, 0], yc[:, 0], "ko", ms=5, label="observations")
    b.set_title("GP posterior given 5 observations")
    for ax in (a, b):
        ax.set_xlabel("t")
        ax.set_ylabel("f(t)")
        ax.set_ylim(-3, 3)
        ax.set_xlim(0, 1)
        ax.legend(frameon=False, loc="lower left", fontsize=8)
    return _save(fig, path)


def langevin_figure(path: Path, *, seed: int = 0) -> Path:
    """Song & Ermon (2019)'s Figure 3 from :func:`langevin_demo`, each panel with the share of
    samples in the heavier mode (exact: 0.8)."""
    s = langevin_demo(seed=seed)
    titles = {
        "exact": "exact samples",
        "langevin": "Langevin dynamics",
        "annealed": "annealed Langevin dynamics",
    }
    fig, axes = _figure(10.5, 3.8, 3)
    for ax, (key, title) in zip(axes, titles.items()):
        x = s[key].numpy()
        share = float((x.sum(1) > 0).mean())
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, rasterized=True)
        ax.set_title(f"{title}\nshare at (5, 5): {share:.2f}  (true 0.80)", fontsize=10)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_aspect("equal")
    return _save(fig, path)


_SDE_LABELS = {"vp": "VP SDE", "subvp": "sub-VP SDE", "ve": "VE SDE"}


def score_sde_figure(
    path: Path,
    *,
    seed: int = 0,
    sdes: Iterable[str | SDE] = ("vp", "ve"),
    n: int = 2000,
    steps: int = 500,
    paths: int = 12,
) -> Path:
    """Song et al. (2021)'s Figure 2 from :func:`score_sde_paths`, one row per SDE: ``paths``
    paths of each process over the exact density p_t(x) (shaded, a heat map over (t, x)), and
    the end points of all ``n`` against p_0. Every row uses the same ``seed``."""
    sdes = list(sdes)
    if not sdes:
        raise ValueError("sdes: expected at least one SDE, got none")
    fig = Figure(figsize=(12.5, 3.3 * len(sdes)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(sdes), 4, squeeze=False)
    panels = [
        ("forward SDE: data → noise", "t_forward", "forward", "tab:orange"),
        ("reverse SDE: noise → data", "t_reverse", "reverse", "tab:cyan"),
        ("probability flow ODE", "t_ode", "ode", "w"),
    ]
    for row, which in zip(grid, sdes):
        r = score_sde_paths(n, steps=steps, seed=seed, sde=which)
        sde, log_prob = r["sde"], r["log_prob"]
        label = _SDE_LABELS.get(which, str(sde)) if isinstance(which, str) else str(sde)
        # the x range: ±3, or ±2.5 standard deviations of p_1 where that is wider (VE)
        m1, s1 = (float(v) for v in sde.marginal(1.0))
        mean, var, _ = mixture_moments()
        half = max(3.0, 2.5 * math.sqrt(m1 * m1 * var + s1 * s1))
        xs = torch.linspace(-half, half, 240, dtype=torch.float64)
        tg = torch.linspace(1e-3, 1.0, 150, dtype=torch.float64)
        dens = torch.stack([log_prob(xs[:, None], float(t)).exp() for t in tg], 1).numpy()
        for ax, (title, tk, pk, colour) in zip(row, panels):
            ax.imshow(
                dens,
                origin="lower",
                aspect="auto",
                extent=(float(tg[0]), float(tg[-1]), -half, half),
                cmap="viridis",
                vmax=float(np.quantile(dens, 0.99)),
            )
            ax.plot(r[tk].numpy(), r[pk][:, :paths].numpy(), color=colour, lw=0.8)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("t")
            ax.set_xlim(0, 1)
            ax.set_ylim(-half, half)
        row[0].set_ylabel(f"{label}:  x")
        h = row[3]
        xh = torch.linspace(-3.0, 3.0, 300, dtype=torch.float64)
        p0 = log_prob(xh[:, None], 0.0).exp().numpy()
        h.plot(xh.numpy(), p0, "k", lw=1.4, label="p₀ (exact)")
        kw = dict(bins=60, range=(-3, 3), density=True, histtype="step", lw=1.2)
        h.hist(r["reverse"][-1].numpy(), color="tab:cyan", label="reverse SDE", **kw)
        h.hist(r["ode"][-1].numpy(), color="tab:purple", label="PF ODE", **kw)
        h.set_title(f"end points of {n} paths", fontsize=10)
        h.set_xlabel("x")
        h.legend(frameon=False, fontsize=8)
    return _save(fig, path)


@dataclass(frozen=True)
class _Picture:
    section: int
    name: str
    title: str
    caption: str
    draw: Callable[[Path], Path]


FIGURES: tuple[_Picture, ...] = (
    _Picture(
        5,
        "brownian_paths",
        "Brownian motion",
        "Sample paths of standard Brownian motion (genmodels.integrate.BrownianMotion) in "
        "their ±2√t envelope, and the law of W(1).",
        brownian_paths_figure,
    ),
    _Picture(
        5,
        "gp_paths",
        "Gaussian process prior and posterior",
        "Each sampled path is one function: draws from an RBF-kernel GP's prior, and from its "
        "posterior given five observations (genmodels.models.gp.GP.sample_paths).",
        gp_paths_figure,
    ),
    _Picture(
        6,
        "langevin_vs_annealed",
        "Langevin vs annealed Langevin",
        "Song & Ermon (2019), Figure 3, with the exact score of 1/5 N((-5,-5), I) + "
        "4/5 N((5,5), I): Langevin dynamics keeps the split of its uniform start, annealed "
        "Langevin dynamics (σ from 20 down to 1) recovers the modes' weights.",
        langevin_figure,
    ),
    _Picture(
        7,
        "score_sde_paths",
        "Forward SDE, reverse SDE and probability flow ODE",
        "Song et al. (2021), Figure 2, on a 1-D mixture under the VP SDE (top) and a VE SDE "
        "with σ_max = 5 (bottom), with the exact score: the shading is p_t(x); the reverse "
        "SDE and the probability flow ODE start from the same noise and both end at p₀.",
        score_sde_figure,
    ),
)
"""The lecture's pictures that need no training, in page order."""


def make_figures(out: Path, sections: Iterable[int]) -> list[dict]:
    """Draw the lecture's no-training pictures of ``sections`` into ``out/lecture/``.

    Args:
        out: the report directory (the page's folder).
        sections: lecture section numbers (1..7); sections without such pictures draw none.

    Returns:
        ``[{"section": int, "title": str, "caption": str, "path": str}]`` in page order, with
        ``path`` the PNG's POSIX path relative to ``out`` (``"lecture/gp_paths.png"``).
    """
    wanted = set()
    for s in sections:
        if isinstance(s, bool) or not isinstance(s, int) or s not in SECTIONS:
            raise ValueError(f"sections must be lecture section numbers 1..7, got {s!r}")
        wanted.add(s)
    out = Path(out)
    made = []
    for pic in FIGURES:
        if pic.section not in wanted:
            continue
        rel = f"lecture/{pic.name}.png"
        pic.draw(out / rel)
        made.append(
            {"section": pic.section, "title": pic.title, "caption": pic.caption, "path": rel}
        )
    return made
