"""timm modules of the `sequencer` family (src/graph/families/sequencer.rs)."""
MODULES = ['sequencer']
