"""timm modules of the `cpubone` family (src/graph/families/cpubone.rs)."""
MODULES = ['cpubone']
