"""The LightningModule, its schedulers, and the builders of trainer, callbacks and loggers."""
