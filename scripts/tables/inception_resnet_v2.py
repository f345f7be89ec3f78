"""timm module `inception_resnet_v2` (src/graph/families/inception_resnet_v2.rs)."""
MODULES = ["inception_resnet_v2"]
