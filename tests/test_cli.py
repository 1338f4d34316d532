import json
import os
import subprocess
import sys

import numpy as np
import pytest

from genmodels.cli import main

TINY = ["--set", "timesteps=50", "--set", "width=32", "--set", "depth=2", "--set", "emb_dim=16"]


def _train(out, *extra):
    return main(
        [
            "train",
            "ddpm",
            "--data",
            "moons",
            "--steps",
            "30",
            "--batch-size",
            "64",
            "--out",
            str(out),
            "--no-progress",
            *TINY,
            *extra,
        ]
    )


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "ddpm" in out and "8gaussians" in out and "checkerboard" in out


def test_python_dash_m_and_console_script():
    r = subprocess.run([sys.executable, "-m", "genmodels", "list"], capture_output=True, text=True)
    assert r.returncode == 0 and "ddpm" in r.stdout


def test_train_sample_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "--set", "ema_decay=0.9", "--seed", "3") == 0
    printed = capsys.readouterr().out
    assert str(run / "samples.png") in printed
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "samples.png", "loss.png"):
        assert (run / name).exists(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "ddpm" and cfg["data"] == "moons" and cfg["seed"] == 3
    assert cfg["model_config"]["timesteps"] == 50 and cfg["train_config"]["ema_decay"] == 0.9
    assert main(["sample", str(run), "--n", "100", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (100, 2)
    assert (
        main(
            [
                "sample",
                str(run),
                "--n",
                "64",
                "--out",
                str(tmp_path / "s.png"),
                "--sampler",
                "ddim",
                "--steps",
                "10",
            ]
        )
        == 0
    )
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert main(["evaluate", str(run), "--n", "300"]) == 0
    m = json.loads((run / "metrics.json").read_text())
    for key in (
        "mmd2",
        "energy_distance",
        "swd",
        "mmd2_floor",
        "energy_distance_floor",
        "swd_floor",
        "mmd_bandwidth",
        "nll_bound_nats",
        "eval_n",
    ):
        assert key in m, key
    assert m["swd"] > m["swd_floor"]  # 30 steps of training: far from the data


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "nosuchmodel"], "unknown model 'nosuchmodel'; known models: "),
        (["train", "ddpm", "--data", "nosuchdata"], "unknown data set 'nosuchdata'"),
        (["train", "ddpm", "--steps", "0"], "steps must be a positive integer"),
        (["train", "ddpm", "--set", "lr"], "expected KEY=VALUE"),
        (["train", "ddpm", "--set", "nosuchkey=1"], "unknown key 'nosuchkey'"),
        (["train", "ddpm", "--set", "width=wide"], "expected an integer"),
        (["train", "ddpm", "--out", "/proc/genmodels-run"], "--out /proc/genmodels-run"),
        (["sample", "/nonexistent/run", "--out", "x.npy"], "not a run directory"),
        (["sample", "/tmp", "--out", "x.txt"], "expected a .npy or .png"),
        (["evaluate", "/nonexistent/run"], "not a run directory"),
        (["train", "ddpm", "--device", "gpu"], "invalid choice"),
        # the seams: data options, data kinds
        (["train", "ddpm", "--set", "data.n_obs=30"], "data set 'moons' takes no options"),
        (["train", "ddpm", "--data", "sine"], "model 'ddpm' takes points/images data"),
        (["train", "ddpm", "--set", "dat.n_obs=30"], "unknown scope 'dat'"),
        (["train", "ddpm", "--data", "sine", "--set", "data.points=many"], "expected an integer"),
        (["train", "logreg", "--data", "digits"], "model 'logreg' takes points data"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, capsys):
    os.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(args))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_resume_guards(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run) == 0
    # an existing run is never overwritten without --resume
    assert _train(run) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "model.safetensors").exists()
    # resuming with a different data set or model is refused
    assert main(["train", "ddpm", "--data", "8gaussians", "--out", str(run), "--resume"]) == 2
    assert "trained on 'moons'" in capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"] = "vae"
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "ddpm", "--data", "moons", "--out", str(run), "--resume"]) == 2
    assert "holds a run of model 'vae'" in capsys.readouterr().err
    assert main(["train", "ddpm", "--out", str(tmp_path / "none"), "--resume"]) == 2


def test_data_options_are_recorded_and_used_by_load_and_evaluate(tmp_path):
    run = tmp_path / "lode"
    args = ["train", "latent-ode", "--steps", "2", "--batch-size", "8", "--out", str(run)]
    args += ["--no-progress", "--set", "data.n_obs=50", "--set", "data.n_train=40"]
    assert main([*args, "--set", "data.n_test=24"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data_options"]["n_obs"] == 50 and cfg["data_options"]["n_test"] == 24
    assert cfg["task"] == "series"
    import genmodels

    model = genmodels.load(run)
    assert model.data_info.options["n_obs"] == 50
    assert main(["evaluate", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_series"] == 24  # the test split of the recorded options, not the default 500
    # a resume keeps the recorded options; a different one is refused
    assert main([*args, "--resume", "--steps", "3"]) == 0
    assert main([*args, "--set", "data.n_test=30", "--resume", "--steps", "4"]) == 2
