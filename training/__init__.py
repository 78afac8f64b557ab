"""Fine-tuning: data loaders shared with evaluation, and (to come) the Alpaca-LoRA trainer."""
