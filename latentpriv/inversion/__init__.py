"""Photo -> latent: the inversion optimiser and the VGG16 perceptual loss / LPIPS it uses."""
