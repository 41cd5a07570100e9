"""wwbl: What is Where by Looking — weakly supervised, open-world localisation with CLIP.

    import wwbl
    model = wwbl.load("checkpoints/shapes_g", clip_checkpoint=..., captioner=...)
    model.ground("image.jpg", ["a red square"])   # WSG: heatmaps + boxes per phrase
    model.detect("image.jpg")                     # WWbL: boxes + phrases from the image alone
"""
__version__ = "0.1.0"

__all__ = ["load", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import wwbl` stays cheap (torch, open_clip and transformers load on first use).
    if name == "load":
        from wwbl.inference.api import load

        return load
    raise AttributeError(f"module 'wwbl' has no attribute {name!r}")
