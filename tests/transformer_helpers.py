"""Small transformer graphs as data, and a check that a rewrite keeps a graph's function (float64)."""
from __future__ import annotations

import torch

import archgraph
from archgraph.fx.apply_plan import transfer, transfer_optimizer


def gpt_graph(depth: int = 2, d: int = 16, heads: int = 2, kv_heads: int | None = None, causal: bool = True,
              norm: str = "layernorm", mlp: int = 32, vocab: int = 13, t: int = 6, head_dim: int | None = None,
              eps: float | None = 1e-5) -> archgraph.Graph:
    """A pre-norm GPT: token + position embeddings, ``depth`` blocks, a final norm and a head."""
    norm_fields = {"eps": eps} if eps is not None else {}
    nodes: dict = {"wte": {"op": "embedding", "in": "tokens", "embedding_dim": d},
                   "wpe": {"op": "position_embedding", "in": "wte"}}
    x = "wpe"
    attn = {"num_heads": heads, "causal": causal}
    if kv_heads is not None:
        attn["kv_heads"] = kv_heads
    if head_dim is not None:
        attn["head_dim"] = head_dim
    for i in range(depth):
        p = f"b{i}_"
        nodes.update({
            p + "ln1": {"op": norm, "in": x, **norm_fields},
            p + "attn": {"op": "attention", "in": p + "ln1", **attn},
            p + "res1": {"op": "add", "in": [x, p + "attn"]},
            p + "ln2": {"op": norm, "in": p + "res1", **norm_fields},
            p + "fc": {"op": "linear", "in": p + "ln2", "out_features": mlp},
            p + "act": {"op": "gelu", "in": p + "fc"},
            p + "proj": {"op": "linear", "in": p + "act", "out_features": d},
            p + "res2": {"op": "add", "in": [p + "res1", p + "proj"]},
        })
        x = p + "res2"
    nodes["ln_f"] = {"op": norm, "in": x, **norm_fields}
    nodes["head"] = {"op": "linear", "in": "ln_f", "out_features": vocab}
    return archgraph.Graph.model_validate({"archgraph": 1, "name": "gpt", "inputs": {"tokens": {"shape": [t],
                                           "vocab": vocab}}, "nodes": nodes, "outputs": ["head"]})


def randomised(graph, seed: int = 0) -> torch.nn.Module:
    """The graph built in float64 with every floating tensor random (norm weights too), in eval mode."""
    m = archgraph.build(graph, dtype=torch.float64, seed=seed).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * 0.5)
    return m


def example(graph, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for shape in graph.inputs.values():
        vocab = getattr(shape, "vocab", None)
        out.append(torch.randint(0, vocab, (batch, *shape), generator=gen) if vocab else
                   torch.randn(batch, *shape, generator=gen, dtype=torch.float64))
    return tuple(out)


def rewrite_error(graph, rule, seed: int = 0, optimizer: bool = True) -> tuple[float, archgraph.Graph]:
    """(largest output difference after applying ``rule`` and carrying the weights, the new graph); with
    ``optimizer`` an Adam state is carried too and checked to have the new parameters' shapes."""
    rw = archgraph.apply(graph, rule)
    old = randomised(graph, seed)
    new = archgraph.build(rw.graph, dtype=torch.float64, seed=seed + 1).eval()
    if optimizer:
        opt = torch.optim.Adam(old.parameters(), lr=1e-3)
        old.train()
        x = example(graph)
        old(*x).double().pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        old.eval()
    transfer(rw.plan, old, new)
    if optimizer:
        transfer_optimizer(rw.plan, opt, old, new)
        for p in new.parameters():
            st = opt.state.get(p)
            if st:
                assert st["exp_avg"].shape == p.shape
    x = example(graph)
    with torch.no_grad():
        err = float((old(*x) - new(*x)).abs().max())
    return err, rw.graph
