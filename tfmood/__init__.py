"""tfmood: mood and theme recognition in music with Keras, attention, and TFLite deployment."""

__version__ = "0.1.0"
