"""Coordinates and cameras (numpy only; no torch needed here)."""
