"""The streaming worker, read top to bottom: `worker` (Faust wiring) -> `processor` (one micro-batch)
-> `store` (Redis windows) and `alerts/` (early warning), with `contracts` and `windows` as the pure
core. `ops/` serves health and metrics; `tools/` replays and records topics and starts the embedded
stack. Nothing here imports the shell (`sentinel/`); the layers are checked by tests/test_layers.py.
"""
