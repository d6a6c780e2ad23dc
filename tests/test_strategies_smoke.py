from hypothesis import given, settings
from strategies import graphs


@settings(max_examples=30, deadline=None)
@given(graphs())
def test_random_graphs_are_valid(g):
    assert g.params >= 0 and g.shapes()[g.outputs[0]]
