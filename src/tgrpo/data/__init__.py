"""Demonstration data: LIBERO-format HDF5 files and their collection from scripted experts."""

from tgrpo.data.hdf5 import REQUIRED_OBS_KEYS, Demo, DemoFile, DemoFileInfo, DemoWriter, default_demo_path

__all__ = ["Demo", "DemoFile", "DemoFileInfo", "DemoWriter", "REQUIRED_OBS_KEYS", "default_demo_path"]
