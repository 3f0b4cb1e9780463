"""LoRA fine-tuning on before/after pairs: the data checks, the training loop, checkpoints, outputs."""
