"""CapsuleGAN Lab: does a capsule-network discriminator make a GAN better?"""

__version__ = "0.1.0"
