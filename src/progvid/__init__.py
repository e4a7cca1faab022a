"""progvid: compute-efficient self-supervised video pre-training and action recognition."""

import os as _os

# OpenMP threads that spin while waiting for each other collapse when the cores are shared
# (data-loader workers, other jobs): measured here, a tiny training step took 5.3 s instead of
# 0.04 s with 2 threads on 2 busy cores. Sleeping waits cost little when the machine is idle.
# Set before torch is imported (libgomp reads it once); an explicit setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
