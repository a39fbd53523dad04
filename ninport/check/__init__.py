"""Comparisons: blob by blob against Caffe or golden files, every written file against the torch module."""
