"""Sum up a GPU check folder (scripts/gpu_check.sh) in ``results.json`` and ``results.md``: the CUDA tests' counts
and failures, the errors they measured (JUnit properties written by tests/test_cuda.py), and the benchmarks' tables
as they printed them.

    python scripts/gpu_results.py runs/gpu_check      # exit status 0 when every step that ran passed
"""
from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

#: what each measured property is, in the order of the report
SECTIONS = [("test_every_seed_builds_on_the_device_like_on_the_cpu", "Every seed on the device against the CPU"),
            ("test_rewrites_and_prune_with_adam_state_on_the_device", "Rewrites with Adam's state on the device"),
            ("test_amp_run_killed_after_a_rewrite_resumes", "AMP runs killed after a rewrite and resumed")]


def read_junit(path: Path) -> dict:
    """Counts per outcome, the failures with their messages, and each case's recorded properties."""
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    failures, measured = [], {}
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            counts["failed"] += 1
            failures.append({"test": name, "message": (bad.get("message") or "")[:500]})
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if props:
            measured[name] = props
    return {"counts": counts, "failures": failures, "measured": measured}


def collect(out: Path) -> dict:
    import torch
    cuda = torch.cuda.is_available()
    r = {"device": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
         "cuda": torch.version.cuda, "steps": {}}
    for rc in sorted(out.glob("*.rc")):
        log = out / f"{rc.stem}.log"
        r["steps"][rc.stem] = {"rc": int(rc.read_text().strip() or 1),
                               "output": log.read_text()[-6000:] if log.exists() else ""}
    junit = out / "junit.xml"
    r["tests"] = read_junit(junit) if junit.exists() else None
    r["ok"] = bool(r["steps"]) and all(s["rc"] == 0 for s in r["steps"].values())
    if not cuda:
        r["note"] = "CUDA is not available here: the CUDA cases skipped and the benchmarks were left out"
    return r


def markdown(r: dict) -> str:
    lines = ["# archgraph GPU check", "", f"- device: {r['device'] or 'none (CUDA not available)'}; torch "
             f"{r['torch']}, CUDA {r['cuda']}", f"- result: **{'ok' if r['ok'] else 'FAILED'}**"]
    if r.get("note"):
        lines.append(f"- {r['note']}")
    lines += ["", "| step | exit status |", "|---|---|"] + [f"| {k} | {v['rc']} |" for k, v in r["steps"].items()]
    t = r["tests"]
    if t:
        c = t["counts"]
        lines += ["", f"CUDA tests (`pytest -m cuda`): {c['passed']} passed, {c['failed']} failed, "
                      f"{c['skipped']} skipped"]
        lines += [f"- FAILED {f['test']}: {f['message']}" for f in t["failures"]]
        for test, title in SECTIONS:
            rows = {k: v for k, v in t["measured"].items() if f"::{test}[" in k and "[cuda" in k}
            if not rows:
                continue
            keys = sorted({p for v in rows.values() for p in v})
            lines += ["", f"## {title}", "", "| case | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
            lines += [f"| {k.split('[', 1)[1].rstrip(']')} | " + " | ".join(v.get(p, "") for p in keys) + " |"
                      for k, v in rows.items()]
    for name, step in r["steps"].items():
        if name != "tests":
            lines += ["", f"## {name}", "", step["output"].strip()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:] or ["runs/gpu_check"])[0])
    r = collect(out)
    (out / "results.json").write_text(json.dumps(r, indent=1))
    (out / "results.md").write_text(markdown(r))
    print(f"gpu_check: {'ok' if r['ok'] else 'FAILED'}; results in {out}/results.md", file=sys.stderr)
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
