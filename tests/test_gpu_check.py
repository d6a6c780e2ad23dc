"""scripts/gpu_check.sh and scripts/gpu_check.py (issue 18) on the CPU: without a GPU the script skips the GPU parts
with a message, exits 0, still runs its CPU references and writes results.json and results.md; the parsers of the
pytest report and of the throughput table, the synthetic CIFAR-shaped data and the short run files; and (slow) a dry
run of the training part on the CPU, where a killed and resumed run must match the uninterrupted one bit for bit."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import archgraph
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check  # noqa: E402

SEEDS = ROOT / "examples" / "seeds"


def no_gpu_env() -> dict:
    """The environment of a child that sees no GPU, whatever this machine has."""
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_arguments(monkeypatch):
    monkeypatch.delenv("GPU_CHECK_OUT", raising=False)
    args = gpu_check.parse_args([])
    assert args.out == "runs/gpu_check" and args.device == "auto" and args.parts == list(gpu_check.PARTS)
    assert args.method_list == ["gnap", "scs"] and args.budget_s == 480
    monkeypatch.setenv("GPU_CHECK_OUT", "/tmp/somewhere")
    args = gpu_check.parse_args(["--only", "seeds,train,bench", "--skip", "train", "--methods", "scs"])
    assert args.out == "/tmp/somewhere" and args.parts == ["seeds", "bench"] and args.method_list == ["scs"]
    assert gpu_check.parse_args(["--out", "x"]).out == "x"
    with pytest.raises(SystemExit, match="unknown speed"):
        gpu_check.parse_args(["--only", "seeds,speed"])
    with pytest.raises(SystemExit, match="unknown sgd"):
        gpu_check.parse_args(["--methods", "sgd"])


def test_without_a_gpu_the_script_skips_the_gpu_parts_and_reports(tmp_path):
    out = tmp_path / "check"
    env = {**no_gpu_env(), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), "--seeds", "tiny_cnn,mlp", "--quick",
                           "--skip", "bench"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "CUDA is not available here: the CUDA parts are skipped" in proc.stdout
    r = json.loads((out / "results.json").read_text())
    assert r["ok"] is True and r["device"] is None and r["cuda_available"] is False
    assert r["environment"]["cuda_available"] is False and r["environment"]["torch"]
    assert r["message"] == "CUDA is not available here: skipped tests, train; the CPU parts that ran passed"
    parts = r["parts"]
    assert list(parts) == ["tests", "seeds", "rewrite", "train", "bench"]
    for name in ("tests", "train"):
        assert {k: v for k, v in parts[name].items() if k != "wall_s"} == {"status": "skipped",
                                                                          "reason": "CUDA is not available here"}
    assert parts["bench"]["status"] == "skipped" and "--skip" in parts["bench"]["reason"]

    seeds = parts["seeds"]
    assert seeds["status"] == "cpu only" and seeds["failed_seeds"] == []
    assert [row["seed"] for row in seeds["rows"]] == ["mlp", "tiny_cnn"]
    for row in seeds["rows"]:
        g = archgraph.load(SEEDS / f"{row['seed']}.yaml")
        assert row["params"] == g.params and row["macs"] == g.macs
        assert row["checks"] == {"cpu_float64_deterministic_init": True, "cpu_float64_finite": True,
                                 "cpu_float32_deterministic_init": True, "cpu_float32_finite": True}
        assert 0 < row["cpu_float32_out_absmax"] < 100 and "float32_eval_out_err" not in row   # no device column

    rewrite = parts["rewrite"]
    assert rewrite["status"] == "cpu only" and rewrite["device"] == "cpu" and rewrite["failed_events"] == []
    rows = rewrite["rows"]
    assert [r["rule"] for r in rows] == ["add_filters", "insert_block", "prune_channels", "archgraph.prune"]
    assert [r["event"] for r in rows] == ["growth", "growth", "prune", "prune"]
    seed_params = archgraph.load(SEEDS / "resnet_cifar.yaml").params
    assert seed_params < rows[0]["params"] < rows[1]["params"]          # two growths
    assert rows[3]["params"] < rows[2]["params"] < rows[1]["params"]    # two prunes
    assert rows[0]["exact"] and rows[1]["exact"] and rows[0]["function_err"] == 0 == rows[1]["function_err"]
    assert not rows[2]["exact"] and rows[2]["function_err"] > 0     # pruning a live channel changes the output
    for row in rows:
        assert row["failed"] == [] and all(row["checks"].values()) and row["weights_err"] == 0
    assert rows[0]["checks"]["optimizer_state_on_device"] and rows[0]["checks"]["optimizer_holds_new_params"]

    md = (out / "results.md").read_text()
    assert md.startswith("# archgraph GPU check\n")
    assert "- result: **ok** (CUDA is not available here: skipped tests, train; the CPU parts that ran passed)" in md
    assert re.search(r"^\| tests \| skipped \| [^|]+ \| CUDA is not available here \|$", md, re.M)
    assert "| seeds | cpu only |" in md and "| rewrite | cpu only |" in md
    assert "| mlp | 2,778 | - |" in md and "| tiny_cnn | 1,030 | - |" in md
    assert '| growth | add_filters | {"node": "stem", "count": 8, "init": "preserve"} |' in md
    assert "## CUDA tests" not in md and "## Short training runs" not in md and "## Throughput" not in md


def test_cuda_asked_for_without_a_gpu_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device", "cuda", "--out", str(tmp_path / "o")],
                          cwd=ROOT, env=no_gpu_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--device cuda: CUDA is not available here" in proc.stderr
    assert not (tmp_path / "o" / "results.json").exists()


def test_cuda_test_files_and_the_junit_report(tmp_path):
    files = [p.name for p in gpu_check.cuda_test_files()]
    assert {"test_build.py", "test_grow.py", "test_scale.py"} <= set(files) and "test_gpu_check.py" not in files
    xml = tmp_path / "junit.xml"
    xml.write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_build" name="test_cuda_build_matches_cpu" time="1.25"/>
<testcase classname="tests.test_grow" name="test_grow_on_cuda" time="3.5"><failure message="assert 0 &gt;= 1">trace</failure></testcase>
<testcase classname="tests.test_grow" name="test_cuda_asked_for_without_cuda" time="0.001"><skipped type="pytest.skip" message="CUDA is available here">s</skipped></testcase>
<testcase classname="tests.test_scale" name="test_cuda_run_resumes" time="0.2"><error message="fixture failed">e</error></testcase>
</testsuite></testsuites>""")
    report = gpu_check.parse_junit(xml)
    assert report["counts"] == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    assert report["cases"][0] == {"test": "tests/test_build.py::test_cuda_build_matches_cpu", "outcome": "passed",
                                  "time_s": 1.25, "message": ""}
    assert report["cases"][1]["outcome"] == "failed" and report["cases"][1]["message"] == "assert 0 >= 1"
    assert report["cases"][2]["message"] == "CUDA is available here"


def test_throughput_table_is_parsed():
    # the layout benchmarks/gpu_throughput.py prints (made-up numbers: only the parsing is tested)
    stdout = ("GPU-NAME, torch 2.13.0, 19,994 params (width x1), batch 128, AMP float16, channels_last True; "
              "median of 5 rounds of 50 steps\n\n"
              "| variant | ms/step | images/s | ratio to hand-written |\n|---|---|---|---|\n"
              "| hand-written | 10.00 | 1,000 | 1.000 |\n| archgraph | 20.00 | 2,000 | 0.500 |\n"
              "| archgraph loop path | 30.50 | 3,000 | 0.250 |\n")
    parsed = gpu_check.parse_throughput(stdout)
    assert parsed["header"].startswith("GPU-NAME, torch 2.13.0, 19,994 params")
    assert parsed["rows"] == [{"variant": "hand-written", "ms": 10.0, "images_s": 1000.0, "ratio": 1.0},
                              {"variant": "archgraph", "ms": 20.0, "images_s": 2000.0, "ratio": 0.5},
                              {"variant": "archgraph loop path", "ms": 30.5, "images_s": 3000.0, "ratio": 0.25}]


def test_synthetic_data_and_run_files(tmp_path):
    images, labels = gpu_check.synthetic_images(200, 0)
    assert images.shape == (200, 96, 32) and images.dtype == np.uint8 and sorted(set(labels)) == list(range(10))
    planes = images.reshape(200, 3, 32, 32)     # what the seeds' [3, 32, 32] input makes of a 96x32 image
    for k in range(10):   # each class has its bright square in its own plane and place
        mean = planes[labels == k].mean(0)
        assert mean[k % 3].max() == 255
    assert len({planes[labels == k].mean(0).argmax() for k in range(10)}) == 10
    root = gpu_check.write_synthetic(tmp_path / "data", 50, 20)
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{f}.gz" for f in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    from archgraph.train import load_config
    import yaml
    for method, seed in (("gnap", "resnet_cifar"), ("scs", "resnet20_half_cifar")):
        for device in ("cuda", "cpu"):
            cfg = gpu_check.run_config(method, root, device, quick=False)
            path = tmp_path / f"{method}-{device}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            run = load_config(path)      # a valid run file
            assert run.method.name == method and run.data.name == "mnist" and run.data.root == str(root)
            assert run.schedule.device == device and run.schedule.epochs == 6 and run.schedule.format == "channels_last"
            assert run.schedule.amp == "float16" and run.data.augment.translate == 0 and run.data.augment.flip
            assert cfg["seed"] == str(SEEDS / f"{seed}.yaml")
            assert tuple(archgraph.load(cfg["seed"]).inputs["image"]) == (3, 32, 32)   # 3 * 32 * 32 == 96 * 32
        assert run.method.max_growths == 1 and run.schedule.threads == 1


def test_a_failed_part_fails_the_check(tmp_path, monkeypatch):
    def broken(ctx):
        raise RuntimeError("boom")
    monkeypatch.setitem(gpu_check.PART_FUNCS, "rewrite", broken)
    r = gpu_check.run_check(gpu_check.parse_args(["--out", str(tmp_path), "--only", "rewrite"]))
    assert r["ok"] is False and r["message"] == "some parts failed: rewrite"
    assert r["parts"]["rewrite"]["status"] == "error" and r["parts"]["rewrite"]["reason"] == "RuntimeError: boom"
    md = (tmp_path / "results.md").read_text()
    assert "- result: **FAILED** (some parts failed: rewrite)" in md and "| rewrite | error |" in md
    assert json.loads((tmp_path / "results.json").read_text())["parts"]["rewrite"]["traceback"].count("boom") >= 1


def test_errors_are_relative_to_the_cpu_values():
    import torch
    want = {"w": torch.tensor([2.0, -4.0]), "b": torch.tensor([1e-17, -1e-17])}   # b: zero up to rounding
    got = {"w": torch.tensor([2.0, -4.004]), "b": torch.tensor([-3e-17, 2e-17])}
    assert gpu_check._grad_err(got, want) == pytest.approx(1e-3, rel=1e-4)   # one scale for every gradient: b is noise
    assert gpu_check._rel(got["b"], want["b"]) > 1                    # which a per-tensor ratio would not see
    assert gpu_check._grad_err({"w": got["w"]}, want) == float("inf")  # a missing gradient
    assert gpu_check._rel(torch.zeros(3), torch.zeros(3)) == 0
    assert gpu_check._rel(torch.ones(2), torch.ones(3)) == float("inf")


def test_decisions_ignore_timings_and_metrics():
    a = [{"event": "start", "time": 1}, {"event": "epoch", "epoch": 1, "version": 0, "metrics": {"val_loss": 1.0}},
         {"event": "rewrite", "rule": "add_filters", "args": {"node": "c1", "count": 2}, "version": 1, "time": 5},
         {"event": "end", "summary": {"wall_s": 3}}]
    b = json.loads(json.dumps(a))
    b[1]["metrics"]["val_loss"], b[2]["time"], b[3]["summary"]["wall_s"] = 0.5, 9, 4
    assert gpu_check._decisions(a) == gpu_check._decisions(b)
    b[2]["args"]["count"] = 3
    assert gpu_check._decisions(a) != gpu_check._decisions(b)


@pytest.mark.slow
def test_dry_run_on_the_cpu_trains_kills_resumes_and_benchmarks(tmp_path):
    """The training and benchmark parts on the CPU (``--device cpu``): both short runs grow, are killed after their
    first rewrite and resume to exactly the uninterrupted run."""
    out = tmp_path / "dry"
    proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--out", str(out), "--device", "cpu", "--quick",
                           "--only", "train,bench"], cwd=ROOT, env=no_gpu_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads((out / "results.json").read_text())
    assert r["device"] == "cpu" and r["ok"] and r["mode"].startswith("dry run on the CPU")
    train = r["parts"]["train"]
    assert train["status"] == "passed" and [x["method"] for x in train["rows"]] == ["gnap", "scs"]
    for x in train["rows"]:
        assert x["failed"] == [] and x["kill"]["landed"] and x["kill"]["rc"] == -9
        assert x["checks"]["resume_bit_for_bit"] and x["checks"]["same_decisions"]
        assert x["resume"]["final_weights_max_diff"] == 0.0
        assert x["summary"]["device"] == "cpu" and x["summary"]["amp"] == "off" and x["summary"]["growth_events"] >= 1
        assert x["summary"]["epochs"] == 4 and len(x["train_loss"]) == 4
    bench = r["parts"]["bench"]
    assert bench["status"] == "passed" and "not a measurement" in bench["note"]
    assert [v["variant"] for v in bench["runs"][0]["rows"]] == ["hand-written", "archgraph", "archgraph loop path"]
    md = (out / "results.md").read_text()
    assert "## Short training runs, killed and resumed" in md and "| gnap | cpu | off |" in md
    assert "## Throughput (benchmarks/gpu_throughput.py)" in md
