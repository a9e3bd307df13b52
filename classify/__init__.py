"""mtf-faces classifier half: baselines on the curated MTF set and scoring of generated faces.

``classify`` may import ``gan``'s public API (config loader, generator loading).
"""

__version__ = "0.1.0"
