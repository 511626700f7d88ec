"""Directions in the latent space: InterFaceGAN boundaries, training new ones, the latent covariance."""
