"""tgrpo: Trajectory-wise Group Relative Policy Optimization for Vision-Language-Action policies."""

import os

# OpenMP threads that find their core taken (an env worker, a second job) sleep instead of spinning. With
# libgomp's default wait, a 2-thread SFT step on the 2-core machine became many times slower whenever another
# process was busy; passive waiting costs a little on an idle machine (docs/performance.md, "OpenMP wait
# policy"). libgomp reads the variable when torch loads, so it is set here, before any torch import of the
# package; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
