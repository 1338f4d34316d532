"""`genmodels bench`: the row arithmetic, the JSON it writes, the Markdown table it rewrites
between the markers (on a temporary copy), one clear error for a missing peer, and no peer
imported by the CLI itself. The one real run is the cheapest benchmark at tiny sizes."""

import json
import subprocess
import sys

import pytest

from genmodels import bench, cli

PEERS = ("torchdiffeq", "torchsde", "torchcde", "zuko", "diffusers", "gpytorch", "sklearn")


def test_row_ratio_difference_and_agreement():
    r = bench.row("ode", "x", 2.0, 4.0, "peer 1.0", limit=0.5)
    assert r["value"] == r["ratio"] == 0.5 and r["pass"] is True and r["target"] == "≤ 0.5x"
    assert bench.row("ode", "x", 2.1, 4.0, "p", limit=0.5)["pass"] is False
    d = bench.row("flows", "nll", 3.05, 3.0, "p", unit="nats", measure="difference", limit=0.02)
    assert d["value"] == pytest.approx(0.05) and d["pass"] is False and "+0.02" in d["target"]
    a = bench.row("gp", "lml", 1.0 + 1e-12, 1.0, "p", measure="relative difference", limit=1e-8)
    assert a["value"] == pytest.approx(1e-12, rel=1e-3) and a["pass"] is True
    assert bench.row("gp", "t", 1.0, 2.0, "p", limit=None)["pass"] is None
    assert set(r) == set(bench.ROW_KEYS)
    with pytest.raises(ValueError, match="measure"):
        bench.row("ode", "x", 1.0, 1.0, "p", measure="speed")


def test_unknown_benchmark_and_bad_out(tmp_path, capsys):
    assert cli.main(["bench", "--only", "nope", "--no-doc"]) == 2
    assert "--only nope: unknown benchmark; known: ode" in capsys.readouterr().err
    assert cli.main(["bench", "--only", "ode", "--out", str(tmp_path / "b.txt")]) == 2
    assert "expected a .json file" in capsys.readouterr().err
    doc = tmp_path / "d.md"
    doc.write_text("# no markers\n")
    assert cli.main(["bench", "--only", "ode", "--doc", str(doc)]) == 2
    assert "no <!-- bench:begin --> marker" in capsys.readouterr().err


def test_a_missing_peer_names_the_extra(monkeypatch, capsys):
    real = bench.importlib.util.find_spec
    monkeypatch.setattr(
        bench.importlib.util, "find_spec", lambda n, *a: None if n == "zuko" else real(n, *a)
    )
    assert cli.main(["bench", "--only", "ode,flows", "--no-doc"]) == 2
    err = capsys.readouterr().err
    assert "flows need zuko" in err and "'bench' extra" in err and "torchdiffeq" not in err


def test_the_cli_imports_no_peer():
    code = (
        "import sys, genmodels.cli as c, genmodels.bench; c._parser();"
        f"print([m for m in {PEERS!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _result(names, rows):
    return {
        "quick": True,
        "tiny": False,
        "started": "now",
        "torch": "t",
        "threads": 1,
        "benchmarks": {n: {"wall_s": 1.0, "cpu_s": 1.0, "peer_versions": ["p 1"]} for n in names},
        "rows": rows,
    }


def test_rewrite_keeps_the_text_around_and_the_other_benchmarks_rows(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text(f"# head\n\ntext\n\n{bench.BEGIN}\nold junk\n{bench.END}\n\n## tail\n")
    gp = [bench.row("gp", "posterior", 1.0, 4.0, "gpytorch 1", limit=0.5, note="|a|")]
    bench.rewrite_doc(doc, _result(["gp"], gp))
    ode = [bench.row("ode", "forward", 3.0, 2.0, "torchdiffeq 0", unit="ms", limit=0.5)]
    bench.rewrite_doc(doc, _result(["ode"], ode))
    text = doc.read_text()
    assert text.startswith("# head\n\ntext\n\n") and text.endswith(f"{bench.END}\n\n## tail\n")
    assert "old junk" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| ode") or ln.startswith("| gp")]
    assert len(lines) == 2 and lines[0].startswith("| ode")  # the registry's order
    assert "| 1.50x | ≤ 0.5x | **FAIL** |" in lines[0] and "| 0.25x | ≤ 0.5x | pass |" in lines[1]
    assert "posterior (\\|a\\|) |" in lines[1]  # a pipe in a note cannot split a cell
    assert text.count("- `gp`: quick run") == 1 and text.count("- `ode`: quick run") == 1
    gp2 = [bench.row("gp", "posterior", 3.0, 4.0, "gpytorch 1", limit=0.5)]
    bench.rewrite_doc(doc, _result(["gp"], gp2))  # replaces gp's rows, keeps ode's
    text = doc.read_text()
    assert "| 0.75x | ≤ 0.5x | **FAIL** |" in text and "0.25x" not in text and "| ode |" in text


def test_quick_only_ode_tiny_writes_json_and_table(tmp_path, capsys):
    pytest.importorskip("torchdiffeq")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(bench.default_doc().read_text())  # a copy of docs/benchmarks.md
    before = doc.read_text().split(bench.BEGIN)[0]
    out = tmp_path / "b.json"
    args = ["bench", "--quick", "--only", "ode", "--tiny", "--out", str(out), "--doc", str(doc)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert (
        res["schema"] == 1 and res["quick"] and res["tiny"] and list(res["benchmarks"]) == ["ode"]
    )
    assert res["wall_s"] > 0 and res["cpu_s"] > 0
    assert res["benchmarks"]["ode"]["peer_versions"][0].startswith("torchdiffeq ")
    (r,) = res["rows"]
    assert set(r) == set(bench.ROW_KEYS) and r["bench"] == "ode" and r["measure"] == "ratio"
    assert r["ours"] > 0 and r["peer"] > 0 and r["ratio"] == pytest.approx(r["ours"] / r["peer"])
    assert r["pass"] is (r["ratio"] <= r["limit"]) and r["target"] == "≤ 0.5x"
    assert "NFE 20/20" in r["note"]  # the same solve on both sides
    assert f"{r['ratio']:.2f}x" in printed and "≤ 0.5x" in printed
    text = doc.read_text()
    assert text.startswith(before)
    table = text.split(bench.BEGIN)[1].split(bench.END)[0]
    assert f"| ode | {r['name']} (" in table and f"| {r['ratio']:.2f}x | ≤ 0.5x |" in table


def test_the_repo_doc_has_one_table_between_the_markers():
    text = bench.default_doc().read_text()
    assert text.count(bench.BEGIN) == 1 and text.count(bench.END) == 1
    table = text.split(bench.BEGIN)[1].split(bench.END)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert {ln.split("|")[1].strip() for ln in rows} <= set(bench.BENCHMARKS)
    assert all(ln.replace("\\|", "").count("|") == 9 for ln in rows)  # 8 cells each


def test_processes_table_mean_and_sample_sd():
    """benchmarks/processes.py --table: mean ± sample sd over seeds, oracle and baseline rows."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_processes_bench", bench.benchmarks_dir() / "processes.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    base = dict(data="gp-rbf", steps=10, baseline_ll=-1.0, baseline_mse=0.5, train_cpu_s=2.0)
    lines = [
        {"data": "gp-rbf", "model": "gp-oracle", "ll": 0.8, "mse": 0.01},
        dict(base, model="np", seed=0, ll=0.1, mse=0.2, ll_single_z=0.0, mse_single_z=0.3),
        dict(base, model="np", seed=1, ll=0.3, mse=0.4, ll_single_z=0.2, mse_single_z=0.5),
        dict(base, model="cnp", seed=0, ll=0.5, mse=0.1),
    ]
    rows = mod.table(lines).splitlines()
    assert rows[2].startswith("| gp-rbf | GP oracle | | 0.800 | 0.0100 |")
    assert rows[3].startswith("| gp-rbf | context-mean baseline | | -1.000 | 0.5000 |")
    # two seeds 0.1, 0.3: mean 0.2, sample sd 0.1414 (ddof 1)
    assert rows[4].startswith("| gp-rbf | np | 0,1 | 0.200 ± 0.141 | 0.3000 ± 0.1414 |")
    assert rows[5].startswith("| gp-rbf | cnp | 0 | 0.500 | 0.1000 |  |  | 2.0 |")


def test_series_rows_run_at_tiny_sizes(tmp_path):
    """Every series row builds its benchmark's arguments itself (a missing field once broke
    `genmodels bench --only series`): run them at tiny sizes and check the rows."""
    pytest.importorskip("torchcde")
    pytest.importorskip("torchdiffeq")
    out = tmp_path / "s.json"
    doc = tmp_path / "benchmarks.md"
    doc.write_text(bench.default_doc().read_text())
    args = ["bench", "--quick", "--only", "series", "--tiny", "--out", str(out), "--doc", str(doc)]
    assert cli.main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    names = [r["name"] for r in rows]
    assert any("Neural CDE training step" in n for n in names)
    assert any("latent ODE training step" in n for n in names)
    assert all(r["ours"] > 0 and r["peer"] > 0 for r in rows)
