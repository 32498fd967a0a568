"""The HTML run report and the per-shard samples it is built from."""
