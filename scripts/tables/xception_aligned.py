"""timm module `xception_aligned` (src/graph/families/xception_aligned.rs)."""
MODULES = ["xception_aligned"]
