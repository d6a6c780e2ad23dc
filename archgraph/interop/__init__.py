"""Other formats in and out: torch modules traced into graphs, ONNX and standalone PyTorch export, and checks that a
conversion computes what the original did."""
