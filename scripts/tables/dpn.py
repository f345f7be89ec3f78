"""timm module `dpn` (src/graph/families/dpn.rs)."""
MODULES = ["dpn"]
