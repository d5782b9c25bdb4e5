"""ConG: contrastive weak-to-strong alignment. All logic of the pipeline lives in this package."""

__version__ = "0.1.0"
