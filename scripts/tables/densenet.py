"""timm module `densenet` (src/graph/families/densenet.rs)."""
MODULES = ["densenet"]
