"""The training side of fieldlens: building, exporting and packaging models (needs the `train` extra)."""
