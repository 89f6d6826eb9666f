"""Data: demo/user lists, MONAI transform chains, HR -> LR degradation, contrast synthesis, DataModule."""
