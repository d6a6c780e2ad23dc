"""Fuzzing the YAML loader and ``archgraph validate``: random bytes, random YAML and random mutations of the seeds.

Whatever the input, the loader either returns a graph or raises an :class:`ArchgraphError`, and ``validate`` exits
with 0 or 2, never with a traceback; each example is bounded in time (the deadline). The mutations also check that
what the JSON Schema refuses, ``validate`` refuses. Sized to run in about 20 seconds.
"""
from __future__ import annotations

import copy
import json

import jsonschema
import yaml
from conftest import SEEDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archgraph.cli import main
from archgraph.errors import ArchgraphError
from archgraph.format.schemas import graph_schema
from archgraph.format.yaml_io import loads

SEED_TEXT = [p.read_text() for p in SEEDS]
SEED_DATA = [yaml.safe_load(t) for t in SEED_TEXT]
SCHEMA = jsonschema.Draft202012Validator(graph_schema())  # built once: validate() re-checks the schema
FUZZ = settings(max_examples=60, deadline=3000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def load_or_domain_error(text: str) -> bool:
    """True if ``text`` is a valid graph; False if refused with a domain error; anything else fails the test."""
    try:
        loads(text, "<fuzz>")
        return True
    except ArchgraphError as err:
        assert str(err).startswith("<fuzz>"), str(err)  # the message names the file
        return False


def validate_exit(tmp_path, data: bytes, capsys) -> int:
    path = tmp_path / "g.yaml"
    path.write_bytes(data)
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code in (0, 2), (code, out, err)
    assert "Traceback" not in out + err
    if code == 2:
        assert err.startswith(f"archgraph: error: {path}")
    return code


scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 20), st.integers(min_value=10 ** 6),
                    st.floats(allow_nan=True), st.text(max_size=6), st.sampled_from(["x", "c1", "relu", "conv2d",
                                                                                      "same", "in", "op", "[3, 3]"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                      st.dictionaries(st.text(max_size=5) | st.sampled_from(["op", "in", "nodes"]), inner,
                                      max_size=3), max_leaves=8)


def paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for k, v in data.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from paths(v, (*prefix, i))


def mutate(draw, data):
    """``data`` with 1 to 3 values replaced, deleted or renamed at random paths (never the root, so a dict stays
    a dict)."""
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(data))[1:]))
        parent = data
        for part in where[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "rename"]))
        if action == "replace":
            parent[where[-1]] = draw(values)
        elif action == "delete":
            del parent[where[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=5))] = parent.pop(where[-1])
    return data


@st.composite
def mutated_seed(draw):
    return mutate(draw, draw(st.sampled_from(SEED_DATA)))


@st.composite
def mutated_text(draw):
    text = bytearray(draw(st.sampled_from(SEED_TEXT)).encode())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        byte = draw(st.sampled_from(list(b" \t\n:-[]{},&*!|>'\"#%@`0179xa") + [0, 0xff, 0xc3]))
        if op == "insert" or i == len(text):
            text[i:i] = bytes([byte])
        elif op == "flip":
            text[i] = byte
        else:
            del text[i:i + draw(st.integers(1, 40))]
    return bytes(text)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(tmp_path, capsys, data):
    validate_exit(tmp_path, data, capsys)


@FUZZ
@given(values)
def test_random_yaml(data):
    load_or_domain_error(yaml.safe_dump(data))


@FUZZ
@given(mutated_text())
def test_byte_mutations_of_the_seeds(tmp_path, capsys, data):
    validate_exit(tmp_path, data, capsys)


@FUZZ
@given(mutated_seed())
def test_mutated_seeds_and_the_schema_agree(data):
    text = yaml.safe_dump(data, sort_keys=False)
    ok = load_or_domain_error(text)
    try:
        plain = json.loads(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError):
        return
    if plain != data:
        return
    try:
        SCHEMA.validate(plain)
    except jsonschema.ValidationError as err:
        assert not ok, f"the schema refuses this graph ({err.message}) but validate accepts it:\n{text}"


# ---- run files, history lines and checkpoints (issue 26: what is read back from disk is checked as strictly) ------
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUN_DATA = yaml.safe_load((ROOT / "examples" / "digits_gnap.yaml").read_text())
RUN_DATA["seed"] = yaml.safe_load((ROOT / "examples" / "seeds" / "mlp.yaml").read_text())


@FUZZ
@given(st.data())
def test_mutated_run_files_validate_or_exit_2(tmp_path, capsys, data):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(mutate(data.draw, RUN_DATA), sort_keys=False))
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in out + err, (code, out, err)
    if code == 2:
        assert err.startswith("archgraph: error:") and err.count("\n") == 1


def _fixture_run(root):
    from rundir_fixture import steps_from_rules, write_run

    from archgraph.format.yaml_io import load
    from archgraph.rules import AddFilters
    seed = load(ROOT / "examples" / "seeds" / "mlp.yaml")
    return write_run(root / "run", seed, steps_from_rules(seed, [AddFilters(node="fc1", count=2)]))


@FUZZ
@given(st.data())
def test_mutated_history_lines_are_read_or_refused(tmp_path_factory, data):
    from archgraph.history.run import Run
    from archgraph.history.timeline import history_dot
    run = _fixture_run(tmp_path_factory.mktemp("fuzz_history"))
    lines = (run / "history.jsonl").read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    lines[i] = json.dumps(mutate(data.draw, json.loads(lines[i])), default=str)
    (run / "history.jsonl").write_text("\n".join(lines) + "\n")
    try:
        r = Run(run)
        for v in r.versions:
            r.metrics_at(v.version), r.metrics_end(v.version), v.rule_label()
        r.series("val_acc", with_rewrites=True), r.name, r.config
        history_dot(r)
    except ArchgraphError:
        pass


@FUZZ
@given(st.data())
def test_mutated_checkpoints_are_accepted_or_refused(data):
    import random

    import numpy as np
    import torch

    from archgraph.history.checkpoints import check_checkpoint
    from archgraph.train.checkpoint import rng_state
    np.random.seed(0)
    random.seed(0)
    ckpt = {"format": 1, "config": "{}", "graph": "archgraph: 1", "version": 1,
            "model": {"fc.weight": torch.zeros(2, 2)}, "optimizer": {}, "strategy": {},
            "rng": rng_state(torch.Generator().manual_seed(0)),
            "loop": {"phase": "train", "epoch": 2, "step": 20, "history_lines": 4, "growth_events": 1,
                     "prune_events": 0, "finalized": False, "pending": [], "epoch_state": None,
                     "last_metrics": "{}", "wall_s": 1.5}, "amp": {}}
    check_checkpoint(ckpt, "last.pt")   # the unmutated one is what grow writes
    try:
        check_checkpoint(mutate(data.draw, ckpt), "last.pt")
    except ArchgraphError as err:
        assert str(err).startswith("last.pt")
