#!/usr/bin/env python3
"""Which of timm's model modules the native families cover: reads timm's registry (the pinned timm
of scripts/setup-generator-env) and the generated tables in src/graph/tables/, and prints a
markdown summary (modules and architectures with a table entry, and the modules without one).
Developers run it when a family lands; CI never does.

    .venv-gen/bin/python scripts/coverage.py [--missing-only]

An architecture "has a table entry" when a family's generated table lists it; a few of those are
refused at build time with the reason (see each family's refusals), which this does not count.
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import timm
from timm.models import _registry

ROOT = Path(__file__).resolve().parent.parent


def registry():
    """{module: sorted [arch]} for every architecture timm registers (pretrained tags dropped)."""
    by_module = defaultdict(set)
    for arch in timm.list_models():
        by_module[_registry._model_to_module[arch]].add(arch)
    return {m: sorted(a) for m, a in by_module.items()}


def tabled():
    """{arch: family} over every generated table."""
    out = {}
    for p in sorted((ROOT / 'src/graph/tables').glob('*.json')):
        for arch in json.loads(p.read_text())['archs']:
            out[arch] = p.stem
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--missing-only', action='store_true', help='only the modules without an entry')
    args = ap.parse_args()
    reg, tab = registry(), tabled()
    rows = []
    for module, archs in sorted(reg.items()):
        have = [a for a in archs if a in tab]
        rows.append((module, len(archs), len(have)))
    total = sum(r[1] for r in rows)
    covered = sum(r[2] for r in rows)
    full = [r for r in rows if r[2] == r[1]]
    partial = [r for r in rows if 0 < r[2] < r[1]]
    missing = [r for r in rows if r[2] == 0]
    print(f'timm {timm.__version__}: {len(rows)} modules, {total} architectures; '
          f'{covered} architectures in the native tables; modules: {len(full)} complete, '
          f'{len(partial)} partial, {len(missing)} without a family '
          f'({sum(r[1] for r in missing)} architectures)')
    if not args.missing_only:
        print('\n| timm module | architectures | in tables |\n|---|---:|---:|')
        for m, n, h in rows:
            if h:
                print(f'| `{m}` | {n} | {h} |')
    print('\nWithout a family: ' + ', '.join(f'`{m}` ({n})' for m, n, _ in missing))
    return 0


if __name__ == '__main__':
    sys.exit(main())
