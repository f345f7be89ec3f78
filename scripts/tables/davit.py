"""timm modules of the `davit` family (src/graph/families/davit.rs)."""
MODULES = ['davit']
