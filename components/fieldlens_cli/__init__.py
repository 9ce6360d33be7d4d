"""The `fieldlens` command line: serve, classify, watch, demo, bench, model."""
