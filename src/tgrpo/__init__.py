"""tgrpo: Trajectory-wise Group Relative Policy Optimization for Vision-Language-Action policies."""

__version__ = "0.1.0"
