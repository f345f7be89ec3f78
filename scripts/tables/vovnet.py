"""timm module `vovnet` (src/graph/families/vovnet.rs)."""
MODULES = ["vovnet"]
