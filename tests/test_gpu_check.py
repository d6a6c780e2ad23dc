"""scripts/gpu_check.sh and scripts/gpu_results.py (issue 31) without a GPU: the script runs the CUDA tests
(``pytest -m cuda``: their CUDA cases skip here), leaves the GPU benchmarks out and writes results.json and
results.md; the summary reads the JUnit report with the errors the tests record."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_results  # noqa: E402


def test_without_a_gpu_the_check_runs_the_cpu_cases_and_reports(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), "tests/test_cuda.py", "-k", "mlp or digits_cnn"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + (out / "tests.log").read_text()
    r = json.loads((out / "results.json").read_text())
    assert r["ok"] and r["device"] is None and "CUDA is not available" in r["note"]
    assert list(r["steps"]) == ["tests"] and r["steps"]["tests"]["rc"] == 0    # no benchmark without a GPU
    c = r["tests"]["counts"]
    assert c == {"passed": 4, "failed": 0, "skipped": 4}       # 2 seeds x 2 dtypes, on the CPU; CUDA skipped
    measured = r["tests"]["measured"]
    case = "tests/test_cuda.py::test_every_seed_builds_on_the_device_like_on_the_cpu[cpu-mlp-float64]"
    assert float(measured[case]["eval_out_err"]) == 0 and float(measured[case]["eval_grad_err"]) == 0
    md = (out / "results.md").read_text()
    assert md.startswith("# archgraph GPU check\n") and "- result: **ok**" in md
    assert "CUDA tests (`pytest -m cuda`): 4 passed, 0 failed, 4 skipped" in md


def test_the_summary_reads_failures_and_the_measured_errors(tmp_path):
    (tmp_path / "junit.xml").write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite>
<testcase classname="tests.test_cuda" name="test_every_seed_builds_on_the_device_like_on_the_cpu[cuda-mlp-float32]">
<properties><property name="eval_out_err" value="3e-08"/><property name="eval_grad_err" value="1e-07"/></properties>
</testcase>
<testcase classname="tests.test_cuda" name="test_amp_run_killed_after_a_rewrite_resumes[cuda-gnap]">
<properties><property name="resume_identical" value="False"/></properties>
<failure message="the resumed run's weights differ by 0.5">trace</failure></testcase>
<testcase classname="tests.test_scale" name="test_amp_and_measured_format[cpu-bfloat16]">
<skipped message="the CPU ignores amp"/></testcase>
</testsuite></testsuites>""")
    for name, rc in (("tests", 1), ("throughput_w1", 0)):
        (tmp_path / f"{name}.rc").write_text(f"{rc}\n")
    (tmp_path / "throughput_w1.log").write_text("| variant | ms/step |\n|---|---|\n| archgraph | 2.00 |\n")
    assert gpu_results.main([str(tmp_path)]) == 1
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["ok"] is False and r["tests"]["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert r["tests"]["failures"] == [{"test": "tests/test_cuda.py::test_amp_run_killed_after_a_rewrite_resumes"
                                               "[cuda-gnap]", "message": "the resumed run's weights differ by 0.5"}]
    md = (tmp_path / "results.md").read_text()
    assert "## Every seed on the device against the CPU" in md and "| cuda-mlp-float32 | 1e-07 | 3e-08 |" in md
    assert "| cuda-gnap | False |" in md and "| tests | 1 |" in md and "| archgraph | 2.00 |" in md


def test_the_cuda_marker_selects_the_device_cases():
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p",
                           "no:cacheprovider", "tests/test_cuda.py", "tests/test_scale.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    ids = [line for line in proc.stdout.splitlines() if "::" in line]
    assert proc.returncode == 0 and ids and "PytestUnknownMarkWarning" not in proc.stdout + proc.stderr
    assert any("[cuda-" in i for i in ids) and any("[cpu-" in i for i in ids)
    assert {i.split("::")[0] for i in ids} == {"tests/test_cuda.py", "tests/test_scale.py"}
    assert not any("test_formats_in_the_loop" in i for i in ids)          # not a device test
