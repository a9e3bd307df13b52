"""mtf-faces GAN half: data preparation, StyleGAN2-ADA-style training, metrics, generation.

``gan`` never imports ``classify``.
"""

__version__ = "0.1.0"
