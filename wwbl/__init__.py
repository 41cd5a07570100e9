"""wwbl: What is Where by Looking — weakly supervised open-world localisation with CLIP."""
__version__ = "0.1.0"
