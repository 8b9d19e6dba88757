"""Queues beyond FIFO: a priority queue for links, a durable SQLite queue for sources and sinks.

- `priority`: `PriorityQueue`, a `SafeQueue` serving the most urgent item first.
- `durable`: `DurableQueue`, items in one SQLite file, leased and acknowledged.
- `resumable`: `run_resumable`, a pipeline run that survives being killed.
- `tasks`: `TaskQueue` and `TaskWorkers`, callables by import path run by threads.
- `command`: the `python -m pipeline queue FILE ...` subcommand.
"""
