"""Experiments over the library: the pipeline behind recipes and the demo, ablations, `emtm bench`."""
