"""cnnfleet: train convolutional image classifiers on one CPU, many GPUs and many nodes.

Importing the package is cheap on purpose: torch, lightning and friends are imported only
after the config has been validated (see cnnfleet.cli).
"""

import time

__version__ = "0.1.0"
STARTED = time.perf_counter()  # command start, for the wall time in run summaries
