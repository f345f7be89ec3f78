"""timm module `inception_v3` (src/graph/families/inception_v3.rs)."""
MODULES = ["inception_v3"]
