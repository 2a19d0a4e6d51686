"""cnnlab: the convolutional chapters of Dive into Deep Learning as a fast, tested library."""

__version__ = "0.1.0"
