"""timm modules of the `swiftformer` family (src/graph/families/swiftformer.rs)."""
MODULES = ['swiftformer']
