"""Networks: the SR U-Net, its LightningModule and the checkpoint loader."""
