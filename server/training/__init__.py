"""Training: the StyleGAN2 trainer of the embedded SynthFaces model (discriminator, losses, data,
the loop; CPU and CUDA), its distillation, and predict mode and the encoder for any generator
(teacher trajectories, the predictor's two stages, the encoder, ``pipeline`` for `livedrag train`)."""
