"""The sentiment classifier: an Alpaca-prompted Llama-family causal LM with an optional LoRA adapter.

Pure ideas live in `labels` and `prompt`; `base` and `classifier` are the torch adapters.
"""
