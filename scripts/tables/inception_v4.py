"""timm module `inception_v4` (src/graph/families/inception_v4.rs)."""
MODULES = ["inception_v4"]
