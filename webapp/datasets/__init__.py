"""Datasets: upload (streamed, size-limited), validation on a worker, the report, preview and column mapping."""
