"""The torch side: building a graph version as a ``torch.fx.GraphModule``, carrying weights, buffers and optimizer
state by a transfer plan, weights on disk, magnitude pruning and choosing a fast execution format. Torch starts here."""
