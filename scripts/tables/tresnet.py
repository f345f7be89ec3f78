"""timm module `tresnet` (src/graph/families/tresnet.rs)."""
MODULES = ['tresnet']
