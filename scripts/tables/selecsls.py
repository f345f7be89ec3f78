"""timm module `selecsls` (src/graph/families/selecsls.rs)."""
MODULES = ["selecsls"]
