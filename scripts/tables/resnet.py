"""timm modules of the `resnet` family (src/graph/families/resnet.rs)."""
MODULES = ['resnet']
