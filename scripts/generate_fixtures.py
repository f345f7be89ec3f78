#!/usr/bin/env python3
"""Generates the committed test fixtures under tests/fixtures from real timm.

Run by developers (never by CI) inside the pinned environment made by scripts/setup-generator-env:

    .venv-gen/bin/python scripts/generate_fixtures.py                 # every fixture
    .venv-gen/bin/python scripts/generate_fixtures.py --only test_vit,test_resnet
    .venv-gen/bin/python scripts/generate_fixtures.py --list
    .venv-gen/bin/python scripts/generate_fixtures.py --demo          # demo model check (after scripts/fetch-demo-model)

Fixtures are listed in scripts/fixtures/family_<family>.py files as `FIXTURES = [dict(...)]`
(see scripts/fixtures/common.py for the keys). tests/fixtures/index.json is merged: entries of
fixtures that were not regenerated are kept.
"""
import argparse
import importlib
import json
import sys
import time
import warnings
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path.insert(0, str(SCRIPTS))


def die(msg):
    print(f'error: {msg}', file=sys.stderr)
    sys.exit(1)


def load_families():
    """Every scripts/fixtures/family_*.py contributes its FIXTURES; the family is the file's suffix."""
    from fixtures.common import FixtureError, normalize_spec
    specs = []
    for path in sorted((SCRIPTS / 'fixtures').glob('family_*.py')):
        family = path.stem[len('family_'):]
        mod = importlib.import_module(f'fixtures.{path.stem}')
        entries = getattr(mod, 'FIXTURES', None)
        if not isinstance(entries, list):
            die(f'{path.relative_to(REPO)} must define FIXTURES = [dict(...), ...]')
        try:
            specs += [normalize_spec(e, family) for e in entries]
        except FixtureError as e:
            die(str(e))
    seen = {}
    for s in specs:
        if s['name'] in seen:
            die(f'fixture name {s["name"]!r} is defined by families {seen[s["name"]]} and {s["family"]}')
        seen[s['name']] = s['family']
    return specs


def merge_index(out_dir, entries):
    path = out_dir / 'index.json'
    fixtures = []
    if path.exists():
        try:
            fixtures = json.loads(path.read_text())['fixtures']
        except (ValueError, KeyError) as e:
            die(f'{path} is not a valid index ({e}); fix or delete it')
    by_name = {f['name']: f for f in fixtures}
    for e in entries:
        by_name[e['name']] = e
    merged = {'fixtures': sorted(by_name.values(), key=lambda f: (f['family'], f['name']))}
    path.write_text(json.dumps(merged, indent=2) + '\n')
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--only', help='comma-separated fixture names to (re)generate')
    ap.add_argument('--out', default=str(REPO / 'tests' / 'fixtures'), help='fixtures directory (default: tests/fixtures)')
    ap.add_argument('--list', action='store_true', help='list the known fixtures and exit')
    ap.add_argument('--demo', nargs='?', const=str(REPO / '.models' / 'tf_efficientnet_lite0.in1k'), metavar='FOLDER',
                    help='instead of fixtures: check the converted demo model folder (default '
                         '.models/tf_efficientnet_lite0.in1k) with timm and write its chelsea.png reference')
    args = ap.parse_args()

    try:
        import timm  # noqa: F401
        import torch
    except ImportError as e:
        die(f'{e}. Run scripts/setup-generator-env and use .venv-gen/bin/python')
    # Keep the log readable: tracer / deprecation chatter from the exporter is expected and harmless.
    warnings.filterwarnings('ignore')

    out_dir = Path(args.out).resolve()
    if args.demo:
        from fixtures.common import FixtureError
        from fixtures.demo import run_demo
        try:
            run_demo(Path(args.demo).resolve(), out_dir, REPO / 'tests' / 'fixtures' / 'images')
        except FixtureError as e:
            die(str(e))
        return

    specs = load_families()
    if args.list:
        for s in specs:
            print(f'{s["family"]:>12}  {s["name"]:<32} {s["arch"]:<20} {s["weights_dtype"]:<5} {",".join(s["onnx_modes"])}')
        return
    if args.only:
        wanted = [n.strip() for n in args.only.split(',') if n.strip()]
        known = {s['name'] for s in specs}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            die(f'unknown fixture(s) {unknown}; known: {sorted(known)}')
        specs = [s for s in specs if s['name'] in wanted]
    if not specs:
        die('no fixtures selected')

    from fixtures.common import FixtureError, build_fixture
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for s in specs:
        t0 = time.time()
        print(f'[{s["family"]}] {s["name"]} ({s["arch"]}) ...', flush=True)
        try:
            entries.append(build_fixture(s, out_dir))
        except FixtureError as e:
            # Fixtures finished before this one are already in place; keep the index in step with them.
            if entries:
                merge_index(out_dir, entries)
            die(f'{e}\n(fixture {s["name"]} was not written)')
        print(f'  done in {time.time() - t0:.1f}s', flush=True)
    path = merge_index(out_dir, entries)
    print(f'wrote {len(entries)} fixture(s); index: {path}')


if __name__ == '__main__':
    main()
