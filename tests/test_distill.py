"""Knowledge distillation: the frozen teacher, the softened KL, hidden-state matching; a toy student learns."""
from __future__ import annotations

import pytest
import torch

import archgraph
from archgraph.train.teacher import HiddenMatch, Teacher, distill_loss, kd_loss, shared_hidden

GPT = archgraph.load("examples/seeds/gpt_tiny.yaml")


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    a = torch.randn(3, 5, 7)
    assert float(kd_loss(a, a, 2.0)) < 1e-6
    assert float(kd_loss(a, torch.randn(3, 5, 7), 2.0)) > 0


def test_teacher_is_frozen_in_eval_mode():
    g = archgraph.load("examples/seeds/mlp.yaml")
    t = Teacher(g, archgraph.build(g, seed=3).state_dict())
    t.module.train()
    x = torch.randn(4, 64)
    assert torch.equal(t(x), t(x))            # dropout off: eval mode on every call
    assert not t(x).requires_grad and all(not p.requires_grad for p in t.module.parameters())


def test_distillation_lowers_the_kl_on_a_toy_pair():
    torch.manual_seed(0)
    teacher = Teacher(GPT, archgraph.build(GPT, seed=1).state_dict())
    g2, w2 = archgraph.prune(GPT, teacher.module.state_dict(), 0.5)   # a smaller student, as compress makes
    student = archgraph.build(g2)
    student.load_state_dict(w2)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 65, (16, 32), generator=gen)
    held = torch.randint(0, 65, (16, 32), generator=gen)
    with torch.no_grad():
        before = float(kd_loss(student(held), teacher(held), 2.0))
    for _ in range(60):
        loss = distill_loss(student(x), teacher(x), temperature=2.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(kd_loss(student(held), teacher(held), 2.0))
    assert after < 0.7 * before, (before, after)


def test_hidden_states_match_where_shapes_agree():
    teacher = Teacher(GPT, archgraph.build(GPT, seed=1).state_dict())
    g2, w2 = archgraph.prune(GPT, teacher.module.state_dict(), 0.5)
    assert shared_hidden(g2, GPT) == []       # the stream is narrower: no shape agrees
    assert shared_hidden(GPT, GPT) == ["wpe", "b0_attn", "b0_proj", "b1_attn", "b1_proj"]
    student = archgraph.build(GPT, seed=2)
    match = HiddenMatch(student, teacher, shared_hidden(GPT, GPT))
    x = torch.randint(0, 65, (2, 32))
    out = student(x)
    teacher(x)
    hidden = match.loss()
    assert hidden is not None and float(hidden.detach()) > 0
    loss = distill_loss(out, teacher(x), temperature=1.0, hidden=hidden, hidden_weight=1.0)
    loss.backward()
    assert student.get_submodule("b0_proj").weight.grad is not None
    match.close()


# ---- the distill method (run files, methods.attach) ---------------------------------------------------------------

def _teacher_files(tmp_path, seed: int = 1):
    """The digits CNN with weights of ``seed`` as a teacher: graph and safetensors files."""
    from archgraph.fx.weights import save_weights
    g = archgraph.load("examples/seeds/digits_cnn.yaml")
    archgraph.save(g, tmp_path / "teacher.yaml")
    save_weights(dict(archgraph.build(g, seed=seed).state_dict()), tmp_path / "teacher.safetensors")
    return g


def _distill_run(tmp_path, **method):
    return {"seed": "teacher.yaml", "data": {"name": "digits", "val_fraction": 0.1, "limit": 128, "batch_size": 32},
            "method": {"name": "distill", "teacher": "teacher.yaml", "teacher_weights": "teacher.safetensors",
                       **method},
            "schedule": {"epochs": 2, "device": "cpu", "threads": 1, "lr": 0.01}}


def test_distill_method_in_a_plain_loop_lowers_the_kl_to_the_teacher(tmp_path):
    from archgraph import methods
    g = _teacher_files(tmp_path, seed=1)
    teacher = Teacher(g, archgraph.load_weights(tmp_path / "teacher.safetensors"))
    net = archgraph.Network(g, seed=5)                      # another initialisation: far from the teacher
    opt = torch.optim.Adam(net.module.parameters(), lr=1e-2)
    method = methods.attach("distill", net, opt, epochs=1, teacher=str(tmp_path / "teacher.yaml"),
                            teacher_weights=str(tmp_path / "teacher.safetensors"), temperature=2.0)
    gen = torch.Generator().manual_seed(0)
    held = torch.randn(64, 1, 8, 8, generator=gen)
    with torch.no_grad():
        net.module.eval()
        before = float(kd_loss(net.module(held), teacher(held), 2.0))
        net.module.train()
    for _ in range(40):
        out = net.module(torch.randn(32, 1, 8, 8, generator=gen))
        loss = method.loss(torch.zeros(()))                 # alpha 0: the task loss weighs nothing
        assert loss.requires_grad and float(loss.detach()) > 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.step()
        assert out.requires_grad
    method.finish()
    with torch.no_grad():
        net.module.eval()
        after = float(kd_loss(net.module(held), teacher(held), 2.0))
    assert after < 0.5 * before, (before, after)


def test_distill_alpha_weighs_the_task_loss_and_pairs_are_checked(tmp_path):
    from archgraph import methods
    from archgraph.errors import ConfigError
    g = _teacher_files(tmp_path)
    files = {"teacher": str(tmp_path / "teacher.yaml"), "teacher_weights": str(tmp_path / "teacher.safetensors")}
    net = archgraph.Network(g, tmp_path / "teacher.safetensors")   # the student starts as the teacher
    method = methods.attach("distill", net, None, epochs=1, alpha=0.25, temperature=3.0, hidden={"c1": "c1"},
                            **files)
    teacher = Teacher(g, archgraph.load_weights(tmp_path / "teacher.safetensors"))
    x = torch.randn(4, 1, 8, 8)
    out = net.module(x)          # training mode: batch statistics, where the teacher uses its running ones
    kl = kd_loss(out, teacher(x), 3.0).detach()
    assert float(kl) > 1e-4
    task = torch.tensor(2.0)     # c1 reads the input alone: its outputs agree, the hidden term is 0
    assert float(method.loss(task).detach()) == pytest.approx(0.25 * 2.0 + 0.75 * float(kl), rel=1e-4)
    assert float(method.loss().detach()) == pytest.approx(0.75 * float(kl), rel=1e-4)
    with pytest.raises(ConfigError, match="teacher has no node 'nope'"):
        methods.attach("distill", archgraph.Network(g), None, epochs=1, hidden={"c2": "nope"}, **files)
    with pytest.raises(ConfigError, match="alpha"):
        methods.attach("distill", archgraph.Network(g), None, epochs=1, alpha=1.5, **files)


def test_grow_with_distill_ends_with_a_summary_and_a_replayable_history(tmp_path):
    import json

    from archgraph.history.run import load_run
    _teacher_files(tmp_path)
    (tmp_path / "run.yaml").write_text(json.dumps(_distill_run(tmp_path, alpha=0.5, hidden="auto")))
    summary = archgraph.grow(tmp_path / "run.yaml", tmp_path / "out", quiet=True)
    assert summary["method"] == "distill" and summary["epochs"] == 2 and 0.0 <= summary["test_acc"] <= 1.0
    epochs = [e for e in load_run(tmp_path / "out").events if e["event"] == "epoch"]
    assert len(epochs) == 2 and all(e["metrics"]["distill_kl"] >= 0 for e in epochs)
    assert archgraph.replay(tmp_path / "out") == archgraph.load(tmp_path / "out" / "versions" / "0000.yaml")


def test_validate_and_grow_name_a_missing_teacher_file(tmp_path):
    import json
    import subprocess
    import sys
    _teacher_files(tmp_path)
    run = _distill_run(tmp_path)
    run["method"]["teacher_weights"] = "missing.safetensors"
    (tmp_path / "run.yaml").write_text(json.dumps(run))
    result = subprocess.run([sys.executable, "-m", "archgraph", "validate", str(tmp_path / "run.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "method.teacher_weights" in result.stderr and "missing.safetensors" in result.stderr
    assert "Traceback" not in result.stderr
    from archgraph.errors import ConfigError
    with pytest.raises(ConfigError, match="method.teacher_weights"):
        archgraph.grow(tmp_path / "run.yaml", tmp_path / "out", quiet=True)
