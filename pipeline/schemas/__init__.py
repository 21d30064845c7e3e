"""Pydantic models of params.yaml, one module per section. Only `pipeline.config` reads the file itself."""
