"""timm modules of the `byobnet` family (src/graph/families/byobnet.rs): byobnet.py and the two
modules whose entrypoints build its `ByobNet` from their own `ByoModelCfg`s, byoanet.py
(self-attention blocks) and mobilevit.py (the `mobilevit` / `mobilevit2` blocks it registers).

byobnet.py's entrypoints pass a `ByoModelCfg` dataclass as `model_cfg`; `ByobNet.__init__` overlays
any other keyword argument onto it (`replace(cfg, **kwargs)`), so its fields are written as the
model's own arguments and config.json's `model_args` override them key by key, as in timm.

Each stage's `ByoBlockCfg`s are written one block per entry (`d=1`, timm's `expand_blocks_cfg`),
a stage being a list of them. RepVGG's `g4` variants give the group size as a function of the
block's channels and its index in the stage (`chs // groups` on every second block); it is written
as `{"groups": groups}` and resolved at build time, so a `width_factor` in model_args still applies.
"""
import dataclasses

import gen_tables

MODULES = ['byobnet', 'byoanet', 'mobilevit']


def _group_size(gs):
    """RepVGG's `lambda chs, idx: chs // groups if (idx + 1) % 2 == 0 else 0`, checked."""
    cells = dict(zip(gs.__code__.co_freevars, (c.cell_contents for c in gs.__closure__ or ())))
    groups = cells['groups']
    for chs, idx in [(64, 0), (64, 1), (256, 2), (256, 3)]:
        assert gs(chs, idx) == (chs // groups if (idx + 1) % 2 == 0 else 0), 'unknown group-size rule'
    return {'groups': groups}


def _stage(stage):
    blocks = stage if isinstance(stage, (list, tuple)) else (stage,)
    out = []
    for bc in blocks:
        for _ in range(bc.d):
            gs = bc.gs
            if callable(gs):
                gs = _group_size(gs)
            out.append({**gen_tables.to_json(dataclasses.replace(bc, d=1, gs=None)), 'gs': gs})
    return out


def serialize(arch, kwargs):
    kwargs = dict(kwargs)
    cfg = kwargs.pop('model_cfg')
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    blocks = fields.pop('blocks')
    out = {k: gen_tables.to_json(v) for k, v in fields.items()}
    out['blocks'] = [_stage(s) for s in blocks]
    return {**out, **gen_tables.to_json(kwargs)}
