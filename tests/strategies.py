"""Hypothesis strategies for random valid graphs: chains, residual adds, concats, depthwise convs, forks,
squeeze-excitation muls and flatten into linear. Shared by the foundation, rule and history tests."""
from __future__ import annotations

from hypothesis import strategies as st

ACTS = ["relu", "relu6", "gelu", "silu", "sigmoid", "tanh", "hardswish", "identity"]


@st.composite
def graph_data(draw, max_blocks: int = 6, image: bool | None = None, imported: bool = False) -> dict:
    """Plain data of a valid graph (what ``archgraph.loads`` would read). ``imported`` adds the ops the importer
    brought for the torchvision zoo: ShuffleNet blocks (slice, channel_shuffle), layer scale, stochastic depth and
    hardsigmoid gates."""
    nodes: dict[str, dict] = {}
    counter = [0]

    def add(node: dict, prefix: str) -> str:
        counter[0] += 1
        nid = f"{prefix}{counter[0]}"
        nodes[nid] = node
        return nid

    use_image = draw(st.booleans()) if image is None else image
    if use_image:
        c = draw(st.integers(1, 4))
        h = draw(st.integers(4, 9))
        w = draw(st.integers(4, 9))
        inputs = {"x": [c, h, w]}
        cur, shape = "x", [c, h, w]
        for _ in range(draw(st.integers(1, max_blocks))):
            kinds = ["conv", "bn", "act", "pool", "depthwise", "residual", "concat", "se", "grouped"]
            kind = draw(st.sampled_from(kinds + (["shuffle", "shuffle", "scaled"] if imported else [])))
            ch = shape[0]
            if kind == "conv":
                out = draw(st.integers(1, 6))
                k = draw(st.sampled_from([1, 3]))
                cur = add({"op": "conv2d", "in": cur, "out_channels": out, "kernel_size": k, "padding": k // 2,
                           "bias": draw(st.booleans())}, "conv")
                shape = [out, *shape[1:]]
            elif kind == "bn":
                cur = add({"op": "batchnorm2d", "in": cur}, "bn")
            elif kind == "act":
                cur = add({"op": draw(st.sampled_from(ACTS)), "in": cur}, "act")
            elif kind == "pool" and min(shape[1:]) >= 4:
                op = draw(st.sampled_from(["maxpool2d", "avgpool2d"]))
                cur = add({"op": op, "in": cur, "kernel_size": 2}, "pool")
                shape = [ch, shape[1] // 2, shape[2] // 2]
            elif kind == "depthwise":
                cur = add({"op": "conv2d", "in": cur, "out_channels": ch, "kernel_size": 3, "padding": 1,
                           "groups": ch, "bias": draw(st.booleans())}, "dw")
            elif kind == "grouped" and ch % 2 == 0:
                cur = add({"op": "conv2d", "in": cur, "out_channels": 2 * draw(st.integers(1, 3)),
                           "kernel_size": 1, "groups": 2}, "gconv")
                shape = [nodes[cur]["out_channels"], *shape[1:]]
            elif kind == "residual":
                a = add({"op": "conv2d", "in": cur, "out_channels": ch, "kernel_size": 3, "padding": 1,
                         "bias": False}, "rconv")
                b = add({"op": "batchnorm2d", "in": a}, "rbn")
                cur = add({"op": "add", "in": [b, cur]}, "sum")
            elif kind == "concat":
                o1, o2 = draw(st.integers(1, 4)), draw(st.integers(1, 4))
                a = add({"op": "conv2d", "in": cur, "out_channels": o1, "kernel_size": 1}, "fork")
                b = add({"op": "conv2d", "in": cur, "out_channels": o2, "kernel_size": 3, "padding": 1}, "fork")
                parts = [a, b] + ([cur] if draw(st.booleans()) else [])
                cur = add({"op": "concat", "in": parts}, "cat")
                shape = [o1 + o2 + (ch if len(parts) == 3 else 0), *shape[1:]]
            elif kind == "se":
                s = add({"op": "adaptive_avgpool2d", "in": cur, "output_size": 1}, "sq")
                s = add({"op": "conv2d", "in": s, "out_channels": ch, "kernel_size": 1}, "ex")
                s = add({"op": draw(st.sampled_from(["sigmoid", "hardsigmoid"]) if imported else st.just("sigmoid")),
                         "in": s}, "gate")
                cur = add({"op": "mul", "in": [cur, s]}, "se")
            elif kind == "shuffle" and ch % 2 == 0 and ch >= 2:
                # a ShuffleNet v2 block: keep one half, transform the other, concat, shuffle
                half = ch // 2
                left = add({"op": "slice", "in": cur, "start": 0, "stop": half}, "left")
                right = add({"op": "slice", "in": cur, "start": half, "stop": ch}, "right")
                b = add({"op": "conv2d", "in": right, "out_channels": half, "kernel_size": 1}, "branch")
                b = add({"op": "conv2d", "in": b, "out_channels": half, "kernel_size": 3, "padding": 1,
                         "groups": half}, "bdw")
                cat = add({"op": "concat", "in": [left, b]}, "cat")
                cur = add({"op": "channel_shuffle", "in": cat, "groups": 2}, "shuffle")
            elif kind == "shuffle":
                # a ShuffleNet v2 downsampling block: two branches concatenated, then shuffled
                half = draw(st.integers(1, 3))
                a = add({"op": "conv2d", "in": cur, "out_channels": half, "kernel_size": 1}, "fork")
                b = add({"op": "conv2d", "in": cur, "out_channels": half, "kernel_size": 3, "padding": 1}, "fork")
                cat = add({"op": "concat", "in": [a, b]}, "cat")
                cur = add({"op": "channel_shuffle", "in": cat, "groups": 2}, "shuffle")
                shape = [2 * half, *shape[1:]]
            elif kind == "scaled":
                # a ConvNeXt-like residual: conv, layer scale, stochastic depth, add
                a = add({"op": "conv2d", "in": cur, "out_channels": ch, "kernel_size": 1}, "pw")
                a = add({"op": "scale", "in": a, "init": draw(st.sampled_from([1.0, 0.5]))}, "ls")
                a = add({"op": "stochastic_depth", "in": a, "p": 0.1}, "sd")
                cur = add({"op": "add", "in": [a, cur]}, "sum")
        if draw(st.booleans()):
            cur = add({"op": "global_avg_pool", "in": cur}, "gap")
            feats = shape[0]
        else:
            cur = add({"op": "flatten", "in": cur}, "flat")
            feats = shape[0] * shape[1] * shape[2]
    else:
        feats = draw(st.integers(1, 12))
        inputs = {"x": [feats]}
        cur = "x"
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["linear", "bn", "act", "ln", "dropout"]))
        if kind == "linear":
            feats = draw(st.integers(1, 8))
            cur = add({"op": "linear", "in": cur, "out_features": feats, "bias": draw(st.booleans())}, "fc")
        elif kind == "bn":
            cur = add({"op": "batchnorm1d", "in": cur}, "bn")
        elif kind == "ln":
            cur = add({"op": "layernorm", "in": cur}, "ln")
        elif kind == "dropout":
            cur = add({"op": "dropout", "in": cur, "p": 0.25}, "drop")
        else:
            cur = add({"op": draw(st.sampled_from(ACTS)), "in": cur}, "act")
    cur = add({"op": "linear", "in": cur, "out_features": draw(st.integers(1, 5))}, "head")
    return {"archgraph": 1, "name": "random", "inputs": inputs, "nodes": nodes, "outputs": [cur]}


def graphs(**kwargs):
    """Strategy of validated :class:`archgraph.Graph` objects."""
    from archgraph.format.yaml_io import graph_from_data
    return graph_data(**kwargs).map(graph_from_data)


#: one small example node of every op, as (input shapes, node data); used by registry and rule tests
EXAMPLE_NODES = {
    "conv2d": ({"x": [4, 6, 6]}, {"in": "x", "out_channels": 4, "kernel_size": 3, "padding": 1, "groups": 4}),
    "linear": ({"x": [5]}, {"in": "x", "out_features": 3}),
    "batchnorm2d": ({"x": [3, 4, 4]}, {"in": "x"}),
    "batchnorm1d": ({"x": [5]}, {"in": "x"}),
    "layernorm": ({"x": [5]}, {"in": "x"}),
    "relu": ({"x": [5]}, {"in": "x"}),
    "relu6": ({"x": [5]}, {"in": "x"}),
    "gelu": ({"x": [5]}, {"in": "x"}),
    "silu": ({"x": [5]}, {"in": "x"}),
    "sigmoid": ({"x": [5]}, {"in": "x"}),
    "tanh": ({"x": [5]}, {"in": "x"}),
    "hardswish": ({"x": [5]}, {"in": "x"}),
    "maxpool2d": ({"x": [3, 4, 4]}, {"in": "x", "kernel_size": 2}),
    "avgpool2d": ({"x": [3, 4, 4]}, {"in": "x", "kernel_size": 2}),
    "adaptive_avgpool2d": ({"x": [3, 4, 4]}, {"in": "x", "output_size": 1}),
    "global_avg_pool": ({"x": [3, 4, 4]}, {"in": "x"}),
    "flatten": ({"x": [3, 4, 4]}, {"in": "x"}),
    "dropout": ({"x": [5]}, {"in": "x", "p": 0.5}),
    "add": ({"x": [5], "y": [5]}, {"in": ["x", "y"]}),
    "mul": ({"x": [3, 4, 4], "y": [3, 1, 1]}, {"in": ["x", "y"]}),
    "concat": ({"x": [3, 4, 4], "y": [2, 4, 4]}, {"in": ["x", "y"]}),
    "identity": ({"x": [5]}, {"in": "x"}),
    "hardsigmoid": ({"x": [5]}, {"in": "x"}),
    "leaky_relu": ({"x": [5]}, {"in": "x", "negative_slope": 0.2}),
    "softcap": ({"x": [5]}, {"in": "x", "cap": 2.0}),
    "group_norm": ({"x": [4, 3, 3]}, {"in": "x", "num_groups": 2}),
    "scale": ({"x": [3, 4, 4]}, {"in": "x", "init": 0.5}),
    "grn": ({"x": [3, 4, 4]}, {"in": "x", "eps": 1e-5}),
    "stochastic_depth": ({"x": [3, 4, 4]}, {"in": "x", "p": 0.2}),
    "channel_shuffle": ({"x": [6, 4, 4]}, {"in": "x", "groups": 2}),
    "slice": ({"x": [6, 4, 4]}, {"in": "x", "start": 1, "stop": 4}),
    "conv_transpose2d": ({"x": [4, 3, 3]}, {"in": "x", "out_channels": 6, "kernel_size": 3, "stride": 2,
                                           "padding": 1, "output_padding": 1, "groups": 2}),
    "upsample": ({"x": [3, 4, 4]}, {"in": "x", "scale_factor": 2, "mode": "bilinear", "align_corners": True}),
    "lstm": ({"x": [4, 3]}, {"in": "x", "hidden_size": 5, "num_layers": 2}),
    "gru": ({"x": [4, 3]}, {"in": "x", "hidden_size": 2, "bias": False}),
    "rmsnorm": ({"x": [3, 5]}, {"in": "x"}),
    "embedding": ({"x": {"shape": [3], "vocab": 7}}, {"in": "x", "embedding_dim": 4}),
    "position_embedding": ({"x": [3, 4]}, {"in": "x"}),
    "attention": ({"x": [3, 4]}, {"in": "x", "num_heads": 2}),
    "moe": ({"x": [3, 4]}, {"in": "x", "num_experts": 3, "top_k": 2, "hidden": 5}),
    "to_tokens": ({"x": [3, 2, 2]}, {"in": "x"}),
    "class_token": ({"x": [3, 4]}, {"in": "x"}),
    "token_pool": ({"x": [3, 4]}, {"in": "x", "mode": "first"}),
    "pad": ({"x": [3, 4, 4]}, {"in": "x", "padding": [0, 1, 2, 1]}),
    "window_attention": ({"x": [4, 5, 6]}, {"in": "x", "num_heads": 2, "window_size": 3, "shift_size": 1}),
    "subsample": ({"x": [3, 5, 4]}, {"in": "x", "offset": [1, 0]}),
    # split attention
    "radix_softmax": ({"x": [8, 1, 1]}, {"in": "x", "radix": 2, "cardinality": 2}),
}


def example_node(op: str):
    """A valid graph holding one ``op`` node: returns ``(graph, node_id)``."""
    from archgraph.format.yaml_io import graph_from_data
    inputs, node = EXAMPLE_NODES[op]
    data = {"archgraph": 1, "name": op, "inputs": inputs, "nodes": {"n": {"op": op, **node}}, "outputs": ["n"]}
    return graph_from_data(data), "n"


@st.composite
def rule_for(draw, graph, kinds: tuple[str, ...] | None = None):
    """A rewrite rule that fits ``graph`` (its node, indices and options drawn from what the graph has).

    add_filters, split_filters, insert_layer, insert_block and delete_node always apply; prune_channels and
    collapse_layer may still raise RuleError (pruning a producer to nothing, changing a graph output's shape).
    """
    from archgraph import rules
    from archgraph.channels import SOURCE, analyse
    from archgraph.rules.base import nonnegative
    from archgraph.topology import users_of

    ch = analyse(graph)
    shapes = graph.shapes()
    widen = []
    for nid, role in ch.roles.items():
        if role == SOURCE:
            space = ch.space(nid)
            if not space.frozen and not space.irregular:
                widen.append(nid)
    prunable = [nid for nid in graph.nodes
                if any(ch.frozen(c) is None for c in ch.classes(nid)) and len(ch.classes(nid)) > 1]
    values = [v for v in (*graph.inputs, *graph.nodes) if len(shapes[v]) in (1, 3)]
    deletable = [nid for nid, n in graph.nodes.items()
                 if len(n.inputs) == 1 and shapes[n.inputs[0]] == shapes[nid] and len(graph.nodes) > 1
                 and not (nid in graph.outputs and n.inputs[0] in graph.outputs)]
    readers = users_of(graph)
    collapsible = [nid for nid in graph.nodes if nid not in graph.outputs and readers[nid]
                   and (all(graph.nodes[u].op in ("add", "concat") for u in readers[nid]) or nid in deletable)]
    options = {"add_filters": widen, "split_filters": widen, "prune_channels": prunable, "insert_layer": values,
               "insert_block": values, "delete_node": deletable, "collapse_layer": collapsible}
    names = [k for k, v in options.items() if v and (kinds is None or k in kinds)]
    if not names:
        return rules.InsertLayer(after=draw(st.sampled_from(values)))
    name = draw(st.sampled_from(names))
    node = draw(st.sampled_from(options[name]))
    if name == "add_filters":
        init = draw(st.sampled_from(["preserve", "net2net", "zero", "random"]))
        return rules.AddFilters(node=node, count=draw(st.integers(1, 3)), init=init, seed=draw(st.integers(0, 9)))
    if name == "split_filters":
        width = shapes[node][0]
        idx = draw(st.lists(st.integers(0, width - 1), min_size=1, max_size=min(width, 3), unique=True))
        return rules.SplitFilters(node=node, indices=tuple(idx), eps=draw(st.sampled_from([0.0, 0.1])))
    if name == "prune_channels":
        free = [i for i, c in enumerate(ch.classes(node)) if ch.frozen(c) is None]
        starts = [0]
        for b in ch.slots[node].block_sizes():
            starts.append(starts[-1] + b)
        idx = draw(st.lists(st.sampled_from(free), min_size=1, max_size=max(1, len(free) - 1), unique=True))
        classes = ch.classes(node)
        if ch.unbalanced({classes[i] for i in idx}) and draw(st.booleans()):
            idx = balanced(ch, classes, free, draw) or idx   # as many from every group of a grouped conv
        return rules.PruneChannels(node=node, indices=tuple(starts[i] for i in idx))
    if name in ("insert_layer", "insert_block"):
        rank = len(shapes[node])
        norm = draw(st.sampled_from([None, "batchnorm"]))
        if name == "insert_layer":
            act = "relu" if nonnegative(graph)[node] and draw(st.booleans()) else None
            return rules.InsertLayer(after=node, kernel_size=draw(st.sampled_from([1, 3])) if rank == 3 else 3,
                                     norm=norm, activation=act)
        return rules.InsertBlock(after=node, width=draw(st.sampled_from([None, 2])), norm=norm,
                                 kernel_size=draw(st.sampled_from([1, 3])) if rank == 3 else 3,
                                 activation=draw(st.sampled_from(["relu", "gelu", None])))
    if name == "delete_node":
        return rules.DeleteNode(node=node)
    return rules.CollapseLayer(node=node)


def balanced(ch, classes, free, draw):
    """Positions of ``classes`` (a node's) taking one channel from every group of the first grouped conv whose
    every group has some of them, each group its own (drawn); None when there is none."""
    from archgraph.channels import grouping_blocks
    where = {c: i for i, c in enumerate(classes) if i in set(free)}
    for gr in ch.groupings:
        ok, blocks = grouping_blocks(ch.uf, gr)
        if ok and gr.groups > 1 and all(b & where.keys() for b in blocks):
            return sorted({where[draw(st.sampled_from(sorted(b & where.keys())))] for b in blocks})
    return None
