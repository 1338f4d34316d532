"""The tour's report: ``results.json`` (written by the tour's runner) -> ``index.html``.

One self-contained page that views offline: inline CSS, no script, the equations as MathML,
every picture an ``<img src>`` naming a PNG beside ``index.html`` (the runner's pictures and
:func:`~genmodels.tour.lecture.make_figures`'), papers cited as text, and no ``src`` or ``href``
that points to the network. Every text from the results is escaped.

The page: the budget and totals at the top, a comparison table of every density model on the
shared data (the entries with ``comparison: true``: NLL in nats with its kind, the sliced
Wasserstein distance to held-out data beside its real-data floor, training and sampling time,
field evaluations), then one ``<section id="section-N">`` per lecture section with its
title, text, equations, the lecture's pictures, and each model's metrics (one table row per
entry, one table per task) and pictures; a failed entry shows its error.

The ``results.json`` schema (one entry per trained model)::

    {"budget": str, "created": iso str, "total_s": float, "sections": [int, ...],
     "entries": [{"section": int, "model": str, "data": str, "task": str,
                  "status": "ok" | "failed", "error": str | null, "run_dir": str,
                  "metrics": {...}, "pictures": [PNG paths relative to the page's folder],
                  "train_s": float, "eval_s": float, "sample_s": float | null,
                  "nfe": int | null, "nll_kind": "exact" | "bound" | "pf-ode" | null,
                  "nll_nats": float | null, "sw": float | null, "sw_floor": float | null,
                  "comparison": bool}]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path, PurePosixPath
from urllib.parse import quote

from .lecture import SECTIONS, make_figures

__all__ = ["render", "load_results", "build_html", "BUDGET_LABELS"]

BUDGET_LABELS = {
    "smoke": "smoke: ≤ 60 s on 2 CPU cores (the test suite's tour)",
    "small": "small: ≤ 15 minutes",
    "full": "full: ≤ 3 hours (the numbers of the docs)",
}
"""How the page names each budget of ``genmodels tour --budget``."""

_NLL_KINDS = {
    "exact": "exact (change of variables)",
    "bound": "upper bound (−ELBO)",
    "pf-ode": "exact via the probability flow ODE",
}

_ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "section": (int,),
    "model": (str,),
    "data": (str,),
    "task": (str,),
    "status": (str,),
    "error": (str, type(None)),
    "run_dir": (str,),
    "metrics": (dict,),
    "pictures": (list,),
    "train_s": (int, float),
    "eval_s": (int, float),
    "sample_s": (int, float, type(None)),
    "nfe": (int, type(None)),
    "nll_kind": (str, type(None)),
    "nll_nats": (int, float, type(None)),
    "sw": (int, float, type(None)),
    "sw_floor": (int, float, type(None)),
    "comparison": (bool,),
}


# ---------------------------------------------------------------------------------------------
# Reading and checking results.json
# ---------------------------------------------------------------------------------------------


def _type_names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _check_picture(path: str, where: str) -> None:
    p = PurePosixPath(path)
    if (
        not path
        or "\\" in path
        or ":" in path
        or p.is_absolute()
        or ".." in p.parts
        or p.suffix.lower() != ".png"
    ):
        raise ValueError(
            f"{where}: pictures must be relative POSIX paths of PNG files inside the report "
            f"folder (no '..', no scheme), got {path!r}"
        )


def load_results(path: Path) -> dict:
    """Read and check ``results.json`` (the schema in the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, or a field missing or of the wrong type or value (named).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key, types in {
        "budget": (str,),
        "created": (str,),
        "total_s": (int, float),
        "sections": (list,),
        "entries": (list,),
    }.items():
        if key not in data:
            raise ValueError(f"{path}: missing field {key!r}")
        if not isinstance(data[key], types) or isinstance(data[key], bool):
            raise ValueError(
                f"{path}: field {key!r} must be {_type_names(types)}, "
                f"got {type(data[key]).__name__}"
            )
    sections = data["sections"]
    for s in sections:
        if isinstance(s, bool) or not isinstance(s, int) or s not in SECTIONS:
            raise ValueError(f"{path}: 'sections' must hold section numbers 1..7, got {s!r}")
    if len(set(sections)) != len(sections):
        raise ValueError(f"{path}: 'sections' repeats a section: {sections}")
    for i, e in enumerate(data["entries"]):
        where = f"{path}: entries[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where} must be an object, got {type(e).__name__}")
        for key, types in _ENTRY_FIELDS.items():
            if key not in e:
                raise ValueError(f"{where}: missing field {key!r}")
            v = e[key]
            if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
                raise ValueError(f"{where}: field {key!r} must be {_type_names(types)}, got {v!r}")
        where = f"{path}: entries[{i}] ({e['model']} on {e['data']})"
        if e["status"] not in ("ok", "failed"):
            raise ValueError(f"{where}: status must be 'ok' or 'failed', got {e['status']!r}")
        if e["section"] not in sections:
            raise ValueError(
                f"{where}: section {e['section']} is not in the results' sections {sections}"
            )
        if e["nll_kind"] is not None and e["nll_kind"] not in _NLL_KINDS:
            raise ValueError(
                f"{where}: nll_kind must be one of {sorted(_NLL_KINDS)} or null, "
                f"got {e['nll_kind']!r}"
            )
        for p in e["pictures"]:
            if not isinstance(p, str):
                raise ValueError(f"{where}: pictures must be strings, got {p!r}")
            _check_picture(p, where)
    return data


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _num(v, digits: int = 4) -> str:
    """A number for a table cell: 4 significant digits, '—' for missing."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}".replace(",", " ")
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return str(v)


def _seconds(v) -> str:
    if v is None:
        return "—"
    v = float(v)
    if v >= 120:
        return f"{v / 60:.1f} min"
    return f"{v:.3g} s" if v < 10 else f"{v:.0f} s"


def _flat_metrics(metrics: dict, prefix: str = "") -> dict[str, object]:
    """Nested metric dicts as dotted keys; lists kept as one short cell."""
    flat: dict[str, object] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flat_metrics(v, key + "."))
        else:
            flat[key] = v
    return flat


def _cell(v) -> str:
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_num(x) if isinstance(x, (int, float)) else str(x) for x in v[:8])
        return escape(f"[{inner}{', …' if len(v) > 8 else ''}]")
    if isinstance(v, (int, float)) or v is None:
        return escape(_num(v))
    return escape(str(v))


def _src(rel: str) -> str:
    """An ``<img src>`` value for a relative POSIX path (percent-encoded, then escaped)."""
    return escape(quote(rel, safe="/"), quote=True)


def _slug(*parts: str) -> str:
    """``model-data`` with anything but letters, digits, '.', '_' and '-' as '_' (an id)."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in "-".join(parts))


def _first_line(text: str | None) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return "failed (no error message)"
    return lines[-1] if len(lines) > 1 and lines[0].startswith("Traceback") else lines[0]


# ---------------------------------------------------------------------------------------------
# Page parts
# ---------------------------------------------------------------------------------------------

_CSS = """
:root { --ink:#1d232b; --muted:#5b6672; --line:#dde2e8; --bg:#f6f7f9; --card:#fff;
        --accent:#2b6cb0; --ok:#2f855a; --bad:#c53030; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",
       "Noto Sans CJK SC",sans-serif; color:var(--ink); background:var(--bg); }
header.top { background:#1f2a37; color:#fff; padding:28px 0 18px; }
.wrap { max-width:1240px; margin:0 auto; padding:0 24px; }
header.top h1 { margin:0 0 6px; font-size:30px; font-weight:650; letter-spacing:-.01em; }
header.top p { margin:4px 0; color:#cbd5e0; }
.budget { display:inline-block; background:#f6e05e; color:#1f2a37; font-weight:650;
          padding:3px 12px; border-radius:999px; font-size:15px; }
.facts { display:flex; flex-wrap:wrap; gap:8px 22px; margin-top:10px; font-size:15px; }
.facts b { color:#fff; }
nav.toc { position:sticky; top:0; z-index:5; background:#fff; border-bottom:1px solid var(--line); }
nav.toc .wrap { display:flex; flex-wrap:wrap; gap:4px 18px; padding-top:9px; padding-bottom:9px; }
nav.toc a { color:var(--accent); text-decoration:none; font-size:15px; white-space:nowrap; }
nav.toc a:hover { text-decoration:underline; }
main { padding:8px 0 40px; }
section.card { background:var(--card); border:1px solid var(--line); border-radius:10px;
               padding:22px 28px 26px; margin:22px 0; scroll-margin-top:52px; }
h2 { font-size:24px; margin:0 0 8px; }
h2 .num { color:var(--accent); margin-right:8px; }
h3 { font-size:18px; margin:26px 0 8px; }
h4 { font-size:16px; margin:18px 0 6px; }
p.lead { color:#2d3748; max-width:70em; margin:6px 0 14px; }
.eqs { display:grid; grid-template-columns:repeat(auto-fit,minmax(420px,1fr)); gap:10px 16px;
       margin:8px 0 4px; }
figure.eq { margin:0; background:#f8fafc; border:1px solid #e6ebf1; border-radius:8px;
            padding:10px 14px 8px; }
figure.eq math { font-size:19px; margin:4px 0 6px; overflow-x:auto;
                 font-family:"STIX Two Math","Latin Modern Math","Cambria Math",math; }
figure.eq figcaption, figure.pic figcaption { color:var(--muted); font-size:14px; }
.pics { display:grid; grid-template-columns:repeat(auto-fill,minmax(360px,1fr)); gap:16px;
        margin:10px 0; }
.pics.wide { grid-template-columns:1fr; }
figure.pic { margin:0; background:#fff; border:1px solid #e6ebf1; border-radius:8px;
             padding:10px; }
figure.pic img { display:block; max-width:100%; height:auto; margin:0 auto; }
figure.pic figcaption b { color:var(--ink); }
.missing { color:var(--bad); font-style:italic; }
.table-scroll { overflow-x:auto; margin:8px 0 4px; }
table { border-collapse:collapse; font-size:14.5px; min-width:60%; }
th, td { padding:6px 12px; border-bottom:1px solid var(--line); text-align:right;
         white-space:nowrap; font-variant-numeric:tabular-nums; }
th { background:#eef2f6; font-weight:600; position:sticky; top:0; }
th:first-child, td:first-child, td.l, th.l { text-align:left; }
tbody tr:nth-child(even) td { background:#fafbfc; }
tr.failed td { background:#fff5f5 !important; }
td.err { color:var(--bad); white-space:normal; text-align:left; max-width:48em; }
.badge { display:inline-block; font-size:12.5px; font-weight:650; padding:1px 8px;
         border-radius:999px; color:#fff; }
.badge.ok { background:var(--ok); } .badge.failed { background:var(--bad); }
.kind { color:var(--muted); font-size:13px; }
.best { font-weight:700; color:var(--ok); }
pre.error { background:#fff5f5; border:1px solid #fed7d7; color:#742a2a; padding:10px 12px;
            border-radius:6px; overflow-x:auto; font-size:13px; white-space:pre-wrap; }
.entry { border-top:1px dashed var(--line); margin-top:18px; }
.entry h4 code { font-size:15px; }
ol.cites { color:#2d3748; font-size:14.5px; margin:6px 0 0; padding-left:22px; }
.note { color:var(--muted); font-size:14px; }
footer { color:var(--muted); font-size:13.5px; padding:0 0 30px; }
"""


def _img(rel: str, out: Path, alt: str) -> str:
    if not (out / rel).is_file():
        return f'<p class="missing">picture missing: {escape(rel)}</p>'
    return f'<img src="{_src(rel)}" alt="{escape(alt, quote=True)}" loading="eager">'


def _equations(section) -> str:
    figs = [
        f'<figure class="eq">{eq.mathml}<figcaption>{escape(eq.caption)}</figcaption></figure>'
        for eq in section.equations
    ]
    return f'<div class="eqs">{"".join(figs)}</div>'


def _lecture_pictures(figures: Sequence[dict], out: Path) -> str:
    if not figures:
        return ""
    items = []
    for f in figures:
        caption = f"<b>{escape(f['title'])}.</b> {escape(f.get('caption', ''))}"
        items.append(
            f'<figure class="pic">{_img(f["path"], out, f["title"])}'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return '<h3>From the lecture</h3><div class="pics wide">' + "".join(items) + "</div>"


def _nll_cell(e: dict) -> str:
    if e["nll_nats"] is None:
        return "—"
    kind = e["nll_kind"]
    prefix = "≤ " if kind == "bound" else ""
    label = f' <span class="kind">{escape(kind)}</span>' if kind else ""
    return f"{escape(prefix + _num(float(e['nll_nats'])))}{label}"


def _comparison(entries: list[dict]) -> str:
    rows = [e for e in entries if e["comparison"]]
    if not rows:
        return (
            '<section class="card" id="comparison"><h2>Density models compared</h2>'
            '<p class="note">No density model ran in this tour.</p></section>'
        )
    datasets = sorted({e["data"] for e in rows})
    ok_nll = [e["nll_nats"] for e in rows if e["status"] == "ok" and e["nll_nats"] is not None]
    best = min(ok_nll) if ok_nll else None
    head = (
        "<tr><th>model</th><th class='l'>§</th><th class='l'>data</th>"
        "<th>NLL (nats) ↓</th><th>SW to held-out ↓</th><th>SW floor</th><th>SW / floor</th>"
        "<th>train</th><th>sample</th><th>NFE</th><th class='l'>status</th></tr>"
    )
    body = []
    for e in rows:
        slug = escape(_slug(e["model"], e["data"]), quote=True)
        sec = SECTIONS[e["section"]]
        link = (
            f'<a href="#section-{e["section"]}" title="{escape(sec.title, quote=True)}">'
            f"§{e['section']}</a>"
        )
        if e["status"] == "failed":
            body.append(
                f'<tr class="failed" data-entry="{slug}"><td>{escape(e["model"])}</td>'
                f"<td class='l'>{link}</td><td class='l'>{escape(e['data'])}</td>"
                f'<td class="err" colspan="7">{escape(_first_line(e["error"]))}</td>'
                f'<td class="l"><span class="badge failed">failed</span></td></tr>'
            )
            continue
        nll = _nll_cell(e)
        if best is not None and e["nll_nats"] == best:
            nll = f'<span class="best">{nll}</span>'
        ratio = (
            _num(e["sw"] / e["sw_floor"], 3)
            if e["sw"] is not None and e["sw_floor"] not in (None, 0)
            else "—"
        )
        body.append(
            f'<tr data-entry="{slug}"><td>{escape(e["model"])}</td>'
            f"<td class='l'>{link}</td><td class='l'>{escape(e['data'])}</td>"
            f"<td>{nll}</td><td>{escape(_num(e['sw']))}</td>"
            f"<td>{escape(_num(e['sw_floor']))}</td><td>{escape(ratio)}</td>"
            f"<td>{escape(_seconds(e['train_s']))}</td>"
            f"<td>{escape(_seconds(e['sample_s']))}</td><td>{escape(_num(e['nfe']))}</td>"
            f'<td class="l"><span class="badge ok">ok</span></td></tr>'
        )
    data_note = (
        f"All on <b>{escape(datasets[0])}</b>."
        if len(datasets) == 1
        else "On the data sets " + ", ".join(f"<b>{escape(d)}</b>" for d in datasets) + "."
    )
    kinds = "; ".join(f"<b>{escape(k)}</b>: {escape(v)}" for k, v in _NLL_KINDS.items())
    return (
        '<section class="card" id="comparison"><h2>Density models compared</h2>'
        f'<p class="lead">{data_note} NLL is the negative log-likelihood of held-out data in '
        f"nats per example, labelled by how it is computed ({kinds}); a bound is not "
        "comparable with an exact value as a score. SW is the sliced Wasserstein distance of "
        "samples to held-out data; the floor is the same distance between two real-data "
        "samples of that size, so SW / floor near 1 means the samples are as close as data "
        "gets. NFE counts network evaluations per sampling call where an ODE or SDE is "
        "solved.</p>"
        f'<div class="table-scroll"><table id="comparison-table"><thead>{head}</thead>'
        f"<tbody>{''.join(body)}</tbody></table></div></section>"
    )


_FIXED_COLS = ("train", "eval", "sample", "NFE")


def _task_table(section: int, task: str, entries: list[dict]) -> str:
    keys: list[str] = []
    for e in entries:
        for k in _flat_metrics(e["metrics"]):
            if k not in keys:
                keys.append(k)
    head = (
        "<tr><th>model</th><th class='l'>data</th><th class='l'>status</th>"
        + "".join(f"<th>{escape(k)}</th>" for k in keys)
        + "".join(f"<th>{c}</th>" for c in _FIXED_COLS)
        + "</tr>"
    )
    rows = []
    for e in entries:
        slug = escape(_slug(e["model"], e["data"]), quote=True)
        anchor = escape(f"entry-{_slug(e['model'], e['data'])}", quote=True)
        name = f'<a href="#{anchor}">{escape(e["model"])}</a>'
        if e["status"] == "failed":
            rows.append(
                f'<tr class="failed" data-entry="{slug}"><td>{name}</td>'
                f"<td class='l'>{escape(e['data'])}</td>"
                f'<td class="l"><span class="badge failed">failed</span></td>'
                f'<td class="err" colspan="{len(keys) + len(_FIXED_COLS)}">'
                f"{escape(_first_line(e['error']))}</td></tr>"
            )
            continue
        flat = _flat_metrics(e["metrics"])
        cells = "".join(f"<td>{_cell(flat.get(k))}</td>" for k in keys)
        rows.append(
            f'<tr data-entry="{slug}"><td>{name}</td><td class="l">{escape(e["data"])}</td>'
            f'<td class="l"><span class="badge ok">ok</span></td>{cells}'
            f"<td>{escape(_seconds(e['train_s']))}</td><td>{escape(_seconds(e['eval_s']))}</td>"
            f"<td>{escape(_seconds(e['sample_s']))}</td><td>{escape(_num(e['nfe']))}</td></tr>"
        )
    tid = escape(f"table-{section}-{task}", quote=True)
    return (
        f"<h4>Task: {escape(task)}</h4>"
        f'<div class="table-scroll"><table id="{tid}"><thead>{head}</thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _entry(e: dict, out: Path) -> str:
    anchor = escape(f"entry-{_slug(e['model'], e['data'])}", quote=True)
    badge = f'<span class="badge {e["status"]}">{e["status"]}</span>'
    parts = [
        f'<div class="entry" id="{anchor}"><h4><code>{escape(e["model"])}</code> on '
        f"<code>{escape(e['data'])}</code> {badge} "
        f'<span class="note">run directory {escape(e["run_dir"])}</span></h4>'
    ]
    if e["status"] == "failed":
        parts.append(f'<pre class="error">{escape(e["error"] or "no error message")}</pre>')
    if e["pictures"]:
        pics = []
        for p in e["pictures"]:
            alt = f"{e['model']} on {e['data']}: {PurePosixPath(p).stem}"
            pics.append(
                f'<figure class="pic">{_img(p, out, alt)}<figcaption><b>{escape(e["model"])}'
                f"</b> · {escape(PurePosixPath(p).stem.replace('_', ' '))}</figcaption></figure>"
            )
        parts.append(f'<div class="pics">{"".join(pics)}</div>')
    elif e["status"] == "ok":
        parts.append('<p class="note">No pictures for this run.</p>')
    parts.append("</div>")
    return "".join(parts)


def _section(number: int, entries: list[dict], figures: list[dict], out: Path) -> str:
    sec = SECTIONS[number]
    parts = [
        f'<section class="card" id="section-{number}">',
        f'<h2><span class="num">{number}.</span>{escape(sec.title)}</h2>',
        f'<p class="lead">{escape(sec.text)}</p>',
        _equations(sec),
        _lecture_pictures(figures, out),
    ]
    if entries:
        n_ok = sum(e["status"] == "ok" for e in entries)
        parts.append(
            f"<h3>Models ({n_ok} of {len(entries)} ran)</h3>"
            if n_ok < len(entries)
            else f"<h3>Models ({len(entries)})</h3>"
        )
        tasks: dict[str, list[dict]] = {}
        for e in entries:
            tasks.setdefault(e["task"], []).append(e)
        parts += [_task_table(number, task, es) for task, es in tasks.items()]
        parts += [_entry(e, out) for e in entries]
    else:
        parts.append('<p class="note">No model of this section ran in this tour.</p>')
    cites = "".join(f"<li>{escape(c)}</li>" for c in sec.citations)
    parts.append(f'<h3>Papers</h3><ol class="cites">{cites}</ol></section>')
    return "".join(parts)


def _header(results: dict) -> str:
    budget = results["budget"]
    label = BUDGET_LABELS.get(budget, f"{budget}")
    entries = results["entries"]
    n_ok = sum(e["status"] == "ok" for e in entries)
    n_bad = len(entries) - n_ok
    failed = f", <b>{n_bad}</b> failed" if n_bad else ""
    return (
        '<header class="top"><div class="wrap">'
        "<h1>genmodels — a tour of the lecture on generative models</h1>"
        "<p>Every model of the lecture trained on its default data, measured with the shared "
        "metrics, and shown beside the equations it implements.</p>"
        f'<p><span class="budget">budget {escape(label)}</span></p>'
        '<div class="facts">'
        f"<span>created <b>{escape(results['created'])}</b></span>"
        f"<span>total time <b>{escape(_seconds(results['total_s']))}</b></span>"
        f"<span><b>{n_ok}</b> of {len(entries)} models ran{failed}</span>"
        f"<span>sections <b>{escape(', '.join(map(str, results['sections'])))}</b></span>"
        "</div></div></header>"
    )


def _nav(sections: list[int]) -> str:
    links = ['<a href="#comparison">Comparison</a>'] + [
        f'<a href="#section-{n}">{n}. {escape(SECTIONS[n].title)}</a>' for n in sections
    ]
    return f'<nav class="toc"><div class="wrap">{"".join(links)}</div></nav>'


def build_html(results: dict, figures: list[dict], out: Path) -> str:
    """The page's HTML from checked ``results`` and :func:`make_figures`' list."""
    sections = sorted(results["sections"])
    by_section: dict[int, list[dict]] = {n: [] for n in sections}
    for e in results["entries"]:
        by_section[e["section"]].append(e)
    body = [_header(results), _nav(sections), '<main><div class="wrap">']
    body.append(_comparison(results["entries"]))
    for n in sections:
        figs = [f for f in figures if f["section"] == n]
        body.append(_section(n, by_section[n], figs, out))
    body.append(
        '</div></main><footer><div class="wrap">Generated by <code>genmodels tour</code>. '
        "The page loads nothing from the network: pictures are the PNG files beside it, "
        "equations are MathML, papers are cited as text.</div></footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>genmodels tour ({escape(results['budget'])})</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def render(out: Path) -> Path:
    """Write ``out/index.html`` from ``out/results.json`` (and draw the lecture's pictures
    into ``out/lecture/``); returns the page's path.

    Raises:
        FileNotFoundError: ``out/results.json`` does not exist.
        ValueError: it does not follow the schema (the field is named).
    """
    out = Path(out)
    results = load_results(out / "results.json")
    figures = make_figures(out, results["sections"])
    page = out / "index.html"
    page.write_text(build_html(results, figures, out), encoding="utf-8")
    return page
