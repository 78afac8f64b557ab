"""The streaming worker: contracts, windows, the Faust app, the embedded stack, replay and record."""
