"""Metrics: image quality, distributions, geometry (DSM errors; point-cloud P/R/F1 and Chamfer), seams."""
