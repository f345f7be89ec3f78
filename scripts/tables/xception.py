"""timm module `xception` (src/graph/families/xception.rs)."""
MODULES = ["xception"]
