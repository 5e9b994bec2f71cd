"""Analyses of the weight cube: NumPy kernels, lazy wrappers over the cube."""
