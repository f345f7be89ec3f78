"""timm module `vgg` (src/graph/families/vgg.rs)."""
MODULES = ["vgg"]
