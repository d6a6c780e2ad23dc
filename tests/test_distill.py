"""Knowledge distillation: the frozen teacher, the softened KL, hidden-state matching; a toy student learns."""
from __future__ import annotations

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
