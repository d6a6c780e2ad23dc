"""Widening a space where a concat meets a value laid out as a whole (``add(concat(a, b), c)``): the new channel
goes into one part of the concat and at the matching place in the whole, and the function stays the same."""
import pytest
import torch
from rewrite_helpers import build64, inputs_for, max_error, outputs

import archgraph
from archgraph import rules
from archgraph.channels import analyse
from archgraph.errors import RuleError
from archgraph.fx.materialise import materialise

CONCAT_ADD = """
archgraph: 1
inputs: {x: [2, 5, 5]}
nodes:
  a:   {op: conv2d, in: x, out_channels: 2, kernel_size: 3, padding: 1}
  b:   {op: conv2d, in: x, out_channels: 3, kernel_size: 1}
  cat: {op: concat, in: [b, a]}
  c:   {op: conv2d, in: x, out_channels: 5, kernel_size: 1}
  bn:  {op: batchnorm2d, in: c}
  sum: {op: add, in: [cat, bn]}
  r:   {op: relu, in: sum}
  d:   {op: conv2d, in: r, out_channels: 3, kernel_size: 3, padding: 1}
  pool: {op: global_avg_pool, in: d}
  fc:  {op: linear, in: pool, out_features: 2}
outputs: [fc]
"""


def same_function(g, rule):
    rw = archgraph.apply(g, rule)
    module = build64(g)
    xs = inputs_for(g)
    assert rw.exact, rule
    assert max_error(outputs(module, xs), outputs(materialise(rw, module, dtype=torch.float64), xs)) <= 1e-10, rule
    return rw


@pytest.mark.parametrize("rule", [
    rules.AddFilters(node="c", count=2),                      # next to c's last channel: a's part
    rules.AddFilters(node="a", count=1),
    rules.AddFilters(node="b", count=2, init="zero"),         # b's part is first: c gets them in the middle
    rules.AddFilters(node="c", count=3, init="net2net", seed=1),
    rules.SplitFilters(node="c", indices=(0, 4), eps=0.0),    # one copy in b's part, one in a's
    rules.SplitFilters(node="b", indices=(1,), eps=0.0),
])
def test_widening_a_concat_added_to_a_whole_keeps_the_function(rule):
    g = archgraph.loads(CONCAT_ADD)
    assert analyse(g).space("c").irregular is None
    rw = same_function(g, rule)
    n = rw.graph.nodes
    assert n["a"].out_channels + n["b"].out_channels == n["c"].out_channels > 5


def test_a_split_channel_lands_in_its_own_part():
    g = archgraph.loads(CONCAT_ADD)
    rw = archgraph.apply(g, rules.SplitFilters(node="c", indices=(0,), eps=0.0))
    assert (rw.graph.nodes["b"].out_channels, rw.graph.nodes["a"].out_channels) == (4, 2)
    # c's copy of channel 0 sits where the concat has b's copy: right after b's part
    assert rw.plan.tensors["c.weight"].axes[0][1].index == (0, 1, 2, 0, 3, 4)


OVERLAP = """
archgraph: 1
inputs: {x: [2, 5, 5]}
nodes:
  a:    {op: conv2d, in: x, out_channels: 2, kernel_size: 1}
  b:    {op: conv2d, in: x, out_channels: 2, kernel_size: 1}
  e:    {op: conv2d, in: x, out_channels: 2, kernel_size: 1}
  cat1: {op: concat, in: [a, b]}
  cat2: {op: concat, in: [b, e]}
  c:    {op: conv2d, in: x, out_channels: 4, kernel_size: 1}
  s1:   {op: add, in: [cat1, c]}
  s2:   {op: add, in: [cat2, c]}
  cat3: {op: concat, in: [s1, s2]}
  out:  {op: conv2d, in: cat3, out_channels: 1, kernel_size: 1}
outputs: [out]
"""


def test_a_whole_tied_to_itself_is_refused_with_the_reason():
    """c is tied to [a, b] by one add and to [b, e] by the other, so c's own channels are tied to each other (c0 is
    a0 and b0, b0 is c2): a new channel of c has no single place; the refusal says why."""
    g = archgraph.loads(OVERLAP)
    assert "tied to each other" in analyse(g).space("c").irregular
    with pytest.raises(RuleError, match="tied to each other"):
        archgraph.apply(g, rules.AddFilters(node="c", count=1))
