"""The tour's report page (genmodels.tour.page, .lecture), checked as text and in a real browser.

The fixture is a results.json in the runner's schema over real tiny PNGs (one entry per kind of
row the page draws: ok and failed, density / classifier / series / process, every NLL kind).
The browser test loads the rendered index.html in headless Chromium, driven over the DevTools
protocol on a pipe (``--remote-debugging-pipe``: stdlib only, no script in the page), and checks
that every image loads (natural width > 0), every section and table row is there, the MathML
lays out, nothing points to the network, and no console error appears. The screenshot is kept
in the pytest tmp dir and in ``artifacts/tour_page.png``. Without Chromium the test skips, or
fails when the environment variable CI is set (as .ci/run does).
"""

from __future__ import annotations

import base64
import fcntl
import json
import math
import os
import select
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from genmodels.tour import lecture, page

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# The fixture: a results.json over real pictures
# ---------------------------------------------------------------------------------------------

_ERROR = (
    'Traceback (most recent call last):\n  File "run.py", line 1\n'
    "ValueError: <script>alert('boom')</script> & the loss went NaN"
)


def _png(path: Path, seed: int) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(200, 2, generator=g)
    fig = Figure(figsize=(3, 3))
    FigureCanvasAgg(fig)
    fig.add_subplot().scatter(x[:, 0], x[:, 1], s=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    return path


def _entry(section, model, data, task, **kw):
    e = {
        "section": section,
        "model": model,
        "data": data,
        "task": task,
        "status": "ok",
        "error": None,
        "run_dir": f"runs/{model}-{data}",
        "metrics": {},
        "pictures": [],
        "train_s": 3.2,
        "eval_s": 0.4,
        "sample_s": None,
        "nfe": None,
        "nll_kind": None,
        "nll_nats": None,
        "sw": None,
        "sw_floor": None,
        "comparison": False,
    }
    e.update(kw)
    return e


def _density(section, model, kind, nll, sw, **kw):
    return _entry(
        section,
        model,
        "8gaussians",
        "density",
        nll_kind=kind,
        nll_nats=nll,
        sw=sw,
        sw_floor=0.031,
        sample_s=0.8,
        comparison=True,
        metrics={"nll_nats": nll, "sliced_w1": sw, "mmd2": {"value": 1e-4, "floor": 2e-5}},
        **kw,
    )


def make_results(out: Path) -> dict:
    """Write tiny pictures and ``out/results.json``; returns the results dict."""
    pics = {}
    for i, (model, data) in enumerate(
        [
            ("vae", "8gaussians"),
            ("realnvp", "8gaussians"),
            ("ffjord", "8gaussians"),
            ("flow-classifier", "moons"),
            ("gp", "gp-rbf"),
            ("ddpm", "8gaussians"),
        ]
    ):
        rel = f"runs/{model}-{data}/samples.png"
        _png(out / rel, i)
        pics[model] = rel
    _png(out / "runs/realnvp-8gaussians/layers.png", 10)
    entries = [
        _density(1, "vae", "bound", 2.91, 0.052, pictures=[pics["vae"]]),
        _entry(
            2,
            "flow-classifier",
            "moons",
            "classifier",
            pictures=[pics["flow-classifier"]],
            metrics={"accuracy": 0.985, "auroc": 0.999},
        ),
        _entry(2, "logreg", "moons", "classifier", metrics={"accuracy": 0.87, "auroc": 0.94}),
        _entry(2, "mlp-classifier", "moons", "classifier", status="failed", error=_ERROR),
        _density(
            3,
            "realnvp",
            "exact",
            2.80,
            0.041,
            pictures=[pics["realnvp"], "runs/realnvp-8gaussians/layers.png"],
        ),
        _density(3, "nsf", "exact", 2.74, 0.036),
        _density(4, "ffjord", "exact", 2.77, 0.039, nfe=412, pictures=[pics["ffjord"]]),
        _entry(4, "odenet", "moons", "classifier", nfe=26, metrics={"accuracy": 0.99}),
        _entry(4, "latent-ode", "spirals", "series", metrics={"mse": 0.013, "nll": -1.2}),
        _entry(
            5,
            "gp",
            "gp-rbf",
            "process",
            pictures=[pics["gp"]],
            metrics={"log_lik": 1.05, "mse": [0.1, 0.2]},
        ),
        _entry(5, "np", "gp-rbf", "process", metrics={"log_lik": 0.41}),
        _density(6, "ncsn", None, None, 0.061, nfe=1001),
        _density(7, "ddpm", "pf-ode", 2.83, 0.044, nfe=1000, pictures=[pics["ddpm"]]),
        _entry(
            7,
            "vesde",
            "8gaussians",
            "density",
            status="failed",
            comparison=True,
            error="RuntimeError: out of time budget",
            train_s=0.0,
            eval_s=0.0,
        ),
    ]
    results = {
        "budget": "small",
        "created": "2026-12-07T10:30:00+00:00",
        "total_s": 812.5,
        "sections": [1, 2, 3, 4, 5, 6, 7],
        "entries": entries,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("tour")
    results = make_results(out)
    return out, results, page.render(out)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src, self.href, self.ids, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "src" in a:
            self.src.append(a["src"])
        if "href" in a:
            self.href.append(a["href"])
        if "id" in a:
            self.ids.append(a["id"])


# ---------------------------------------------------------------------------------------------
# The page as text
# ---------------------------------------------------------------------------------------------


def test_page_is_self_contained_and_escaped(rendered):
    out, results, index = rendered
    assert index == out / "index.html"
    html = index.read_text(encoding="utf-8")
    p = _Links()
    p.feed(html)
    # every picture is a PNG file beside index.html; every link an anchor in the page
    assert p.src, "no pictures on the page"
    for s in p.src:
        assert not s.startswith(("/", "http:", "https:", "//")), s
        assert (out / s).is_file(), s
    assert all(h.startswith("#") for h in p.href), p.href
    assert {h[1:] for h in p.href} <= set(p.ids)
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    # the error text of the failed entries is shown, escaped
    assert "&lt;script&gt;alert(&#x27;boom&#x27;)&lt;/script&gt; &amp; the loss went NaN" in html
    assert "RuntimeError: out of time budget" in html
    # one section per lecture section, the budget labelled, the lecture's pictures drawn
    for n in results["sections"]:
        assert f'id="section-{n}"' in html
    assert "small: ≤ 15 minutes" in html
    assert {f"lecture/{f.name}.png" for f in lecture.FIGURES} <= set(p.src)
    for pic in {s for e in results["entries"] for s in e["pictures"]}:
        assert pic in p.src
    assert html.count("<math") == sum(len(s.equations) for s in lecture.SECTIONS.values())


def test_nll_kinds_and_bound_are_labelled(rendered):
    html = rendered[2].read_text(encoding="utf-8")
    table = html[html.index('id="comparison-table"') :]
    table = table[: table.index("</table>")]
    assert '≤ 2.91 <span class="kind">bound</span>' in table  # a bound is an upper bound
    assert '2.74 <span class="kind">exact</span>' in table
    assert '2.83 <span class="kind">pf-ode</span>' in table
    assert table.count("<tr") == 1 + sum(e["comparison"] for e in rendered[1]["entries"])
    # the best NLL (nsf's 2.74) is the highlighted one
    assert '<span class="best">2.74' in table


def test_mathml_is_well_formed():
    for sec in lecture.SECTIONS.values():
        assert sec.title and sec.text and sec.citations and sec.equations
        for eq in sec.equations:
            root = ET.fromstring(eq.mathml)  # raises on unbalanced markup
            assert root.tag == "math" and root.get("display") == "block"
            tokens = [el for el in root.iter() if el.tag in ("mi", "mn", "mo")]
            assert tokens and all((el.text or "").strip() for el in tokens), eq.caption
            assert "http" not in eq.mathml


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("budget"), "missing field 'budget'"),
        (lambda r: r["entries"][0].pop("nll_kind"), "missing field 'nll_kind'"),
        (lambda r: r["entries"][0].update(status="done"), "status must be 'ok' or 'failed'"),
        (lambda r: r["entries"][0].update(nll_kind="elbo"), "nll_kind must be one of"),
        (lambda r: r["entries"][0].update(train_s="3"), "field 'train_s' must be int or float"),
        (lambda r: r["entries"][0].update(comparison=1), "field 'comparison' must be bool"),
        (lambda r: r.update(sections=[1, 9]), "section numbers 1..7"),
        (lambda r: r.update(sections=[2, 3, 4, 5, 6, 7]), "not in the results' sections"),
        (lambda r: r["entries"][0].update(pictures=["../x.png"]), "relative POSIX paths"),
        (lambda r: r["entries"][0].update(pictures=["http://a/x.png"]), "relative POSIX paths"),
        (lambda r: r["entries"][0].update(pictures=["/abs/x.png"]), "relative POSIX paths"),
    ],
)
def test_bad_results_are_named(tmp_path, change, message):
    results = make_results(tmp_path)
    change(results)
    (tmp_path / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match=message):
        page.load_results(tmp_path / "results.json")


def test_missing_results_and_missing_picture(tmp_path):
    with pytest.raises(FileNotFoundError):
        page.render(tmp_path)
    results = make_results(tmp_path)
    results["sections"] = [3]
    results["entries"] = [e for e in results["entries"] if e["section"] == 3]
    results["entries"][0]["pictures"] = ["runs/gone.png"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    html = page.render(tmp_path).read_text(encoding="utf-8")
    assert "picture missing: runs/gone.png" in html and 'src="runs/gone.png"' not in html
    assert 'id="section-3"' in html and 'id="section-4"' not in html


# ---------------------------------------------------------------------------------------------
# The lecture's pictures and the closed forms behind them
# ---------------------------------------------------------------------------------------------


def test_make_figures_draws_the_sections_pictures(rendered, tmp_path):
    out = rendered[0]  # render() drew every section's pictures into out/lecture/
    assert lecture.make_figures(tmp_path, [1, 2, 3, 4]) == []
    assert not (tmp_path / "lecture").exists()
    assert [f.section for f in lecture.FIGURES] == [5, 5, 6, 7]
    for f in lecture.FIGURES:
        data = (out / "lecture" / f"{f.name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(ValueError, match="sections must be lecture section numbers"):
        lecture.make_figures(tmp_path, [8])
    with pytest.raises(ValueError, match="sections must be lecture section numbers"):
        lecture.make_figures(tmp_path, [True])


def test_mixture_score_is_the_gradient_of_the_log_density():
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    mu = torch.randn(3, 2, generator=g, dtype=torch.float64) * 3
    x = torch.randn(50, 2, generator=g, dtype=torch.float64).requires_grad_()
    var = 1.7
    comp = w.log() - 0.5 * (x.unsqueeze(1) - mu).square().sum(-1) / var
    (grad,) = torch.autograd.grad(comp.logsumexp(1).sum(), x)
    torch.testing.assert_close(lecture.mixture_score(x.detach(), w, mu, var), grad)


def test_annealed_langevin_recovers_the_weights_langevin_does_not():
    # Song & Ermon (2019), Fig. 3: with 1280 samples the share's standard error is ~0.011
    s = lecture.langevin_demo(n=1280, seed=0)
    share = {k: float((v.sum(1) > 0).double().mean()) for k, v in s.items()}
    assert abs(share["exact"] - 0.8) < 0.05
    assert abs(share["annealed"] - 0.8) < 0.06
    # plain Langevin keeps the split of the uniform start along the diagonal (1/2)
    assert abs(share["langevin"] - 0.5) < 0.08


def test_reverse_sde_and_pf_ode_end_at_the_data_forward_at_the_prior():
    r = lecture.score_sde_paths(n=2000, steps=200, seed=1)
    w, mu, sd = lecture._SDE_WEIGHTS, lecture._SDE_MEANS[:, 0], lecture._SDE_STDS
    mean = float((w * mu).sum())
    var = float((w * (sd**2 + mu**2)).sum()) - mean**2
    se = math.sqrt(var / 2000)
    for key in ("reverse", "ode"):
        end = r[key][-1]
        assert abs(float(end.mean()) - mean) < 5 * se, key
        assert abs(float(end.var()) / var - 1) < 0.1, key
        assert abs(float((end > 0).double().mean()) - float(w[1])) < 0.04, key
    # the VP SDE's p(x_1 | x_0) = N(sqrt(ᾱ(1)) x_0, 1 - ᾱ(1)) ≈ N(0, 1)
    end = r["forward"][-1]
    assert abs(float(end.mean())) < 5 / math.sqrt(2000) and abs(float(end.std()) - 1) < 0.06
    # the PF ODE is deterministic: the same start gives the same path
    again = lecture.score_sde_paths(n=2000, steps=200, seed=1)
    torch.testing.assert_close(again["ode"], r["ode"])


# ---------------------------------------------------------------------------------------------
# The page in headless Chromium, over the DevTools protocol on a pipe
# ---------------------------------------------------------------------------------------------


def _chromium() -> str | None:
    """The browser: $CHROMIUM when set (only that), else /usr/bin/chromium or on the PATH."""
    if "CHROMIUM" in os.environ:
        candidates = [os.environ["CHROMIUM"]]
    else:
        candidates = ["/usr/bin/chromium", shutil.which("chromium")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


# Puts the pipe ends passed as argv[1], argv[2] on fds 3 and 4, then becomes the browser.
_TRAMPOLINE = (
    "import os, sys; a, b = int(sys.argv[1]), int(sys.argv[2]); "
    "os.dup2(a, 3); os.dup2(b, 4); os.close(a); os.close(b); os.execv(sys.argv[3], sys.argv[3:])"
)


class DevTools:
    """A headless Chromium with ``--remote-debugging-pipe``: the browser reads JSON commands
    on its fd 3 and writes replies and events on fd 4, each message ending in a NUL byte."""

    def __init__(self, exe: str, profile: Path, timeout: float = 60.0):
        self.timeout, self.next_id, self.events = timeout, 0, []
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        # high fd numbers, so that moving them onto 3 and 4 cannot clobber one with the other
        a = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        b = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r), os.close(from_child_w)
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--remote-debugging-pipe",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        self.log = open(profile.parent / "chromium-stderr.txt", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _TRAMPOLINE, str(a), str(b), exe, *args],
            pass_fds=(a, b),
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        os.close(a), os.close(b)
        self.buf = b""

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.from_child], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.from_child, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit {self.proc.poll()})")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + self.timeout
        while True:
            ev = self._read_message(deadline)
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def close(self):
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_child), os.close(self.from_child)
        self.log.close()


_CHECKS = """(() => {
  const imgs = [...document.images].map(i => ({src: i.getAttribute('src'),
      width: i.naturalWidth, complete: i.complete}));
  const tables = {};
  for (const t of document.querySelectorAll('table[id]'))
    tables[t.id] = [...t.querySelectorAll('tbody tr')].map(r => r.dataset.entry);
  const urls = [...document.querySelectorAll('[src],[href]')]
      .map(e => e.getAttribute('src') || e.getAttribute('href'));
  const maths = [...document.querySelectorAll('math')].map(m => {
      const r = m.getBoundingClientRect(); return [r.width, r.height]; });
  const mfrac = document.querySelector('mfrac');
  const overflowing = [...document.querySelectorAll('figure.eq')]
      .filter(f => f.querySelector('math').scrollWidth > f.querySelector('math').clientWidth + 1)
      .map(f => f.querySelector('figcaption').textContent);
  return JSON.stringify({imgs, tables, urls, maths, overflowing,
      sections: [...document.querySelectorAll('section[id]')].map(s => s.id),
      fracDisplay: mfrac ? getComputedStyle(mfrac).display : null,
      height: document.documentElement.scrollHeight});
})()"""


def _errors(events: list[dict]) -> list[str]:
    found = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            found.append(json.dumps(p.get("args"))[:300])
        elif m == "Runtime.exceptionThrown":
            found.append(json.dumps(p.get("exceptionDetails"))[:300])
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            found.append(p["entry"].get("text", "")[:300])
    return found


def _need_chromium() -> str:
    exe = _chromium()
    if exe is None:
        reason = "Chromium not found ($CHROMIUM or /usr/bin/chromium; apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason + "; under CI the browser test must run")
        pytest.skip(reason)
    return exe


def load_page(exe: str, html: Path, tmp: Path) -> tuple[dict, list[str], bytes]:
    """Open ``html`` at 1280 px wide; return what :data:`_CHECKS` found, the console errors,
    and a screenshot of the whole page (PNG bytes)."""
    browser = DevTools(exe, tmp / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attach = {"targetId": target, "flatten": True}
        sid = browser.send("Target.attachToTarget", attach)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=sid)
        metrics = {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False}
        browser.send("Emulation.setDeviceMetricsOverride", metrics, session=sid)
        browser.send("Page.navigate", {"url": html.resolve().as_uri()}, session=sid)
        browser.wait_for("Page.loadEventFired")
        value = browser.send(
            "Runtime.evaluate", {"expression": _CHECKS, "returnByValue": True}, session=sid
        )["result"]["value"]
        found = json.loads(value)
        metrics["height"] = min(int(found["height"]), 16000)  # the whole page in one shot
        browser.send("Emulation.setDeviceMetricsOverride", metrics, session=sid)
        shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=sid)
        return found, _errors(browser.events), base64.b64decode(shot["data"])
    finally:
        browser.close()


def test_chromium_harness_sees_broken_images_and_console_errors(tmp_path):
    # the checks below could fail: a broken picture and a script's console.error are caught
    exe = _need_chromium()
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><section id="s"><img src="nope.png">'
        "<script>console.error('seen')</script></section></body></html>"
    )
    found, errors, _ = load_page(exe, bad, tmp_path)
    assert found["imgs"] == [{"src": "nope.png", "width": 0, "complete": True}]
    assert found["sections"] == ["s"]
    assert any("seen" in e for e in errors), errors
    assert any("nope.png" in e or "ERR_FILE_NOT_FOUND" in e for e in errors), errors


def test_page_in_headless_chromium(rendered, tmp_path):
    out, results, index = rendered
    check_page_in_chromium(out, results, index, tmp_path, "tour_page.png")


def test_real_smoke_tour_in_headless_chromium(tmp_path):
    # the smoke tour itself (every section, every registered model, the budget the suite uses),
    # rendered and loaded: what a user of `genmodels tour --budget smoke` opens
    from genmodels.tour.run import run_tour

    out = tmp_path / "tour"
    results = run_tour(out, "smoke", device="cpu", progress=False)
    assert results["sections"] == list(range(1, 8))
    failed = [(e["model"], e["error"]) for e in results["entries"] if e["status"] != "ok"]
    assert not failed, failed
    index = page.render(out)
    check_page_in_chromium(out, json.loads((out / "results.json").read_text()), index,
                           tmp_path, "tour_smoke.png")  # fmt: skip


def check_page_in_chromium(out: Path, results: dict, index: Path, tmp_path: Path, shot: str):
    exe = _need_chromium()
    found, errors, png = load_page(exe, index, tmp_path)
    # the screenshot is the run's artifact: in the tmp dir and in artifacts/ (gitignored)
    (tmp_path / shot).write_bytes(png)
    artifacts = Path(os.environ.get("GENMODELS_ARTIFACTS", ROOT / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / shot).write_bytes(png)

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # every image loaded
    n_lecture = sum(f.section in results["sections"] for f in lecture.FIGURES)
    assert len(found["imgs"]) == sum(len(e["pictures"]) for e in results["entries"]) + n_lecture
    bad = [i for i in found["imgs"] if not (i["complete"] and i["width"] > 0)]
    assert not bad, f"images that did not load: {bad}"
    # every section and every table row
    expected_sections = ["comparison"] + [f"section-{n}" for n in results["sections"]]
    assert found["sections"] == expected_sections
    entries = results["entries"]
    slug = lambda e: f"{e['model']}-{e['data']}"
    want = {"comparison-table": [slug(e) for e in entries if e["comparison"]]}
    for e in entries:
        want.setdefault(f"table-{e['section']}-{e['task']}", []).append(slug(e))
    assert found["tables"] == want
    # nothing from the network; MathML laid out by the browser (MathML Core)
    assert all(u.startswith("#") or (out / u).is_file() for u in found["urls"]), found["urls"]
    n_eq = sum(len(s.equations) for s in lecture.SECTIONS.values())
    assert len(found["maths"]) == n_eq
    assert all(w > 50 and h > 10 for w, h in found["maths"]), found["maths"]
    assert "math" in (found["fracDisplay"] or ""), "the browser did not lay out MathML"
    assert not found["overflowing"], f"equations wider than their box: {found['overflowing']}"
    assert not errors, f"console errors: {errors}"
