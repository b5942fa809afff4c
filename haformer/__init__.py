"""HAFormer, step by step: the package behind the book.

Importing it registers the model names (``haformer_b0/b1/b2``, ``hapeformer_seed``) with timm.
"""

from haformer.fuse import fuse
from haformer.fusion import CWF
from haformer.hape import BranchHAPEBlock, HAPEBlock
from haformer.model import HAFormer, create_model, list_models
from haformer.pem import PEM

__all__ = [
    "CWF",
    "PEM",
    "BranchHAPEBlock",
    "HAFormer",
    "HAPEBlock",
    "create_model",
    "fuse",
    "list_models",
]
__version__ = "0.1.0"
