"""timm modules of the `cspnext` family (src/graph/families/cspnext.rs)."""
MODULES = ['cspnext']
