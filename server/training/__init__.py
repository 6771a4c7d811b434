"""Training the embedded SynthFaces StyleGAN2: discriminator, losses, data, the loop (CPU and CUDA)."""
