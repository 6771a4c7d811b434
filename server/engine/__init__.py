"""The engine: generator, checkpoints, DragGAN optimisation, predictor. Never imports the web stack."""
