"""Observe a run: a bottleneck report, progress bars, Prometheus metrics, a dashboard, a timeline.

Each module reads the core's statistics snapshots (`Pipeline.stats()`) or its per-batch
observer; none changes how a run behaves. `report` needs only the standard library;
`progress` needs tqdm (`[progress]`), `metrics` and `dashboard` need prometheus_client
(`[metrics]`), `plot` needs matplotlib (`[plot]`). Import the module you use.
"""
