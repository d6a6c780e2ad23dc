"""The file format: YAML in and out (safely, with size and depth limits), error translation and atomic writes, and
the JSON Schemas generated from the pydantic models. No torch."""
