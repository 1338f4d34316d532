"""No example in the docs can rot: every ```python block of docs/*.md and README.md runs.

A page's blocks run top to bottom in one namespace (a later block may use an earlier one's
names), in a temporary directory, on one thread. A block that cannot run on its own (a
signature, a fragment that names undefined inputs) is marked on the line just above its fence
with ``<!-- docs-test: skip (the reason) -->``; the reason is required. A block's checks are its
own ``assert`` statements. The design page's sampler recipe is checked further below: added by
the documented recipe, it works through ``DDPM.sample`` and reports its network evaluations."""

import re
from pathlib import Path

import pytest
import torch

from genmodels import registry
from genmodels.models import samplers
from genmodels.models.ddpm import DDPM, NoiseSchedule
from genmodels.nn import TimeMLP

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SKIP = re.compile(r"<!-- docs-test: skip \((.+)\) -->\s*$")


def blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, skip reason or None)`` of every ```python block of ``page``."""
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").splitlines()
        skip = SKIP.search(before[-1]) if before else None
        out.append((text[: m.start()].count("\n") + 1, m.group(1), skip and skip.group(1)))
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A temporary working directory; the global tables an example may add to are restored."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    monkeypatch.setattr(samplers, "SAMPLERS", dict(samplers.SAMPLERS))
    import genmodels.models.ddpm as ddpm_mod

    monkeypatch.setattr(ddpm_mod, "SAMPLERS", samplers.SAMPLERS, raising=False)
    registry.names()  # every model module imported (registered) before the table is copied
    monkeypatch.setattr(registry, "_MODELS", dict(registry._MODELS))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield tmp_path
    torch.set_num_threads(threads)


def test_every_page_is_found_and_skips_say_why(tmp_path):
    assert DESIGN in PAGES and len(PAGES) >= 10
    for page in PAGES:
        for line, code, reason in blocks(page):
            assert code.strip(), f"{page.name}:{line}: empty python block"
            if reason is not None:
                assert len(reason.strip()) >= 10, f"{page.name}:{line}: give the reason"
    probe = tmp_path / "probe.md"
    probe.write_text(
        "text\n<!-- docs-test: skip (a signature, not code) -->\n```python\nf(x)\n```\n"
        "```python\ng(x)\n```\n```bash\nls\n```\n"
    )
    assert blocks(probe) == [(3, "f(x)\n", "a signature, not code"), (6, "g(x)\n", None)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_the_python_blocks_of_the_page_run(page, sandbox):
    namespace = {"__name__": f"docs_{page.stem}"}
    for line, code, reason in blocks(page):
        if reason is not None:
            continue
        try:
            exec(compile(code, f"{page.name}:{line}", "exec"), namespace)
        except Exception as e:  # the page and line of the block that failed
            raise AssertionError(f"{page.relative_to(ROOT)}, block at line {line}: {e!r}") from e
    if not blocks(page):
        pytest.skip(f"{page.name} has no python block")


def _block(containing: str) -> str:
    (code,) = [c for _, c, _ in blocks(DESIGN) if containing in c]
    return code


def test_the_documented_sampler_example_runs(sandbox):
    exec(compile(_block("def euler_pf"), str(DESIGN), "exec"), {})
    assert "euler_pf" in samplers.SAMPLERS
    torch.manual_seed(0)
    model = DDPM(TimeMLP(2, 16, 2, 16), (2,), NoiseSchedule.linear(50)).eval()
    stats = {}
    fn = samplers.SAMPLERS["euler_pf"]
    x = fn(model.eps_model, torch.randn(8, 2), model.schedule, steps=20, stats=stats)
    assert x.shape == (8, 2) and torch.isfinite(x).all() and stats["nfe"] == 20
    out = model.sample(8, sampler="euler_pf", steps=10, generator=torch.Generator().manual_seed(0))
    assert out.shape == (8, 2)
