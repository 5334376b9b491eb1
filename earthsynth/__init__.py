"""earthsynth: generative Earth observation and satellite-to-3D city reconstruction."""

__version__ = "0.1.0"
