#!/usr/bin/env python3
"""Runs the benchmark (called by scripts/bench, which prepares models, driver and venvs).

Contenders, on the same machine in one run, alternating:
  libtimm       benches/driver.c through the C ABI on the release libtimm.so (native graph)
  ort-python    onnxruntime.InferenceSession on timm's own ONNX export (weights embedded)
  timm-eager    timm PyTorch eager (torch.inference_mode)
With --openvino-python (scripts/bench passes it unless --no-openvino), the OpenVINO backend too, at all
cores: libtimm with backend=openvino against OpenVINO's own Python API on timm's export, at fp32 and,
on CPUs with native bf16 (AMX or AVX512_BF16), at bf16; elsewhere libtimm's refusal of bf16 is checked.

Every measurement is a fresh process (loads start from nothing, RSS belongs to one model). Results:
<out>/<stamp>.json (every sample), <out>/<stamp>.csv (one row per metric), <out>/latest.{json,csv},
the summary bench/RESULTS.md and the plot bench/results.png (--summary-dir), and ratios on stdout.
This script needs only the standard library, plus matplotlib for the plot.
"""
import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = 'tf_efficientnet_lite0.in1k'
MODELS = ['resnet50', 'efficientnet_b0', 'vit_small_patch16_224', 'convnext_tiny', 'mobilenetv3_large_100', DEMO]
QUICK_MODELS = ['resnet50', 'mobilenetv3_large_100']
RUNNERS = ('libtimm', 'ort-python', 'timm-eager')
OV_MODELS = ['resnet50', 'convnext_tiny', 'vit_base_patch16_224', 'efficientnet_b0', 'mobilenetv3_large_100']


def cpu_flags():
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('flags'):
                return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


def has_native_bf16():
    """What OpenVINO's CPU plugin needs for bf16 inference (and what libtimm checks)."""
    f = cpu_flags()
    return 'amx_bf16' in f or 'avx512_bf16' in f


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float('nan')


def pct(xs, p):
    """Nearest-rank percentile (p99 of 50 samples is the largest but none: no interpolation)."""
    if not xs:
        return float('nan')
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


class Bench:
    def __init__(self, args):
        self.a = args
        self.bench = Path(args.bench).resolve()
        self.env = dict(os.environ)
        self.env['TIMM_ORT_LIBRARY'] = args.ort_library
        self.records = []  # flat rows: model, contender, metric, threads, concurrency, batch, value, unit
        self.samples = []  # raw per-process outputs
        self.cold_method = self.pick_cold_method()

    # -- processes ------------------------------------------------------------------------------

    def proc(self, argv, what):
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, env=self.env, cwd=REPO)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f'error: {what} failed ({r.returncode}):\n{r.stderr[-3000:]}')
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out['process_wall_s'] = wall
        self.samples.append({'what': what, 'argv': [str(a) for a in argv], 'out': out})
        return out

    def driver(self, *args):
        return [self.a.driver, *map(str, args)]

    def py(self, *args):
        return [self.a.python, str(REPO / 'scripts' / 'bench_peers.py'), *map(str, args)]

    def folder(self, m):
        return self.bench / 'models' / m

    def onnx(self, m):
        return self.bench / 'onnx' / f'{m}.onnx'

    def ref(self, m):
        return self.bench / 'ref' / m

    def add(self, model, contender, metric, value, unit, threads='', concurrency='', batch='', note=''):
        self.records.append(dict(model=model, contender=contender, metric=metric, threads=threads,
                                 concurrency=concurrency, batch=batch, value=value, unit=unit, note=note))

    # -- cold start -----------------------------------------------------------------------------

    def pick_cold_method(self):
        """A cold load reads from disk, not the page cache. Dropping the whole cache needs root;
        without it, the model files are evicted one by one (posix_fadvise DONTNEED), which leaves
        libraries (torch, ORT) cached: a milder 'cold' that the results name."""
        if self.a.cold == 'none':
            return 'none'
        try:
            with open('/proc/sys/vm/drop_caches', 'w') as f:
                f.write('1\n')
            return 'drop_caches'
        except OSError:
            return 'fadvise'

    def make_cold(self, paths):
        os.sync()
        if self.cold_method == 'drop_caches':
            with open('/proc/sys/vm/drop_caches', 'w') as f:
                f.write('1\n')
        elif self.cold_method == 'fadvise':
            for p in paths:
                for f in ([p] if p.is_file() else sorted(p.rglob('*'))):
                    if f.is_file():
                        fd = os.open(f, os.O_RDONLY)
                        try:
                            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        finally:
                            os.close(fd)

    # -- measurements ---------------------------------------------------------------------------

    def baselines(self):
        """RSS of a process that loaded ORT and made a trivial session: the floor under every load."""
        tiny = REPO / 'tests' / 'fixtures' / 'models' / 'test_resnet-embedded'
        hw, hp = [], []
        for _ in range(3):
            hw.append(self.proc(self.driver('load', f'local:{tiny}', 'graph=onnx'), 'baseline libtimm')['hwm_kb'])
            hp.append(self.proc(self.py('load-ort', tiny / 'model.onnx'), 'baseline ort-python')['hwm_kb'])
        self.base_kb = {'libtimm': median(hw), 'ort-python': median(hp)}
        self.add('(trivial session)', 'libtimm', 'baseline_peak_rss', median(hw) / 1024, 'MiB')
        self.add('(trivial session)', 'ort-python', 'baseline_peak_rss', median(hp) / 1024, 'MiB')
        log(f'ORT baseline peak RSS: libtimm {median(hw) / 1024:.1f} MiB, onnxruntime-python {median(hp) / 1024:.1f} MiB')

    def loads(self, m):
        """Load time and RSS, each in a fresh process; warm (files cached) and cold, alternating."""
        spec = f'local:{self.folder(m)}'
        scratch = tempfile.mkdtemp(prefix='timm-first-load-')

        def first(*opts):
            # An empty optimised-model cache of its own: this load builds, optimises and writes
            # the entry, as the first load of a model on a machine does.
            cache = tempfile.mkdtemp(dir=scratch)
            return self.driver('load', spec, f'graph_cache_dir={cache}', *opts)

        # `libtimm` / `libtimm-map` load from the optimised-model cache (every load after the first).
        contenders = {
            'libtimm': lambda: self.driver('load', spec),
            'libtimm-map': lambda: self.driver('load', spec, 'weights_memory=map'),
            'libtimm-first': lambda: first(),
            'libtimm-map-first': lambda: first('weights_memory=map'),
            'ort-python': lambda: self.py('load-ort', self.onnx(m)),
            'timm-python': lambda: self.py('load-timm', self.folder(m)),
        }
        files = {c: [self.folder(m)] for c in contenders}
        files['ort-python'] = [self.onnx(m)]
        # The cached rows need the entry: a new build of the library has its own (its binary is
        # in the key), so the first load of each mode is made here and not measured.
        for c in ('libtimm', 'libtimm-map'):
            self.proc(contenders[c](), f'{m} load, fills the cache, {c}')
        got = {(c, k): [] for c in contenders for k in ('warm', 'cold')}
        names = list(contenders)
        for rep in range(max(self.a.load_reps, self.a.cold_reps)):
            order = names if rep % 2 == 0 else names[::-1]
            for c in order:
                if rep < self.a.cold_reps and self.cold_method != 'none':
                    self.make_cold(files[c])
                    got[(c, 'cold')].append(self.proc(contenders[c](), f'{m} load cold {c}'))
                if rep < self.a.load_reps:
                    got[(c, 'warm')].append(self.proc(contenders[c](), f'{m} load warm {c}'))
        for (c, kind), outs in got.items():
            if not outs:
                continue
            self.add(m, c, f'load_{kind}', median([o['load_s'] for o in outs]), 's',
                     note=self.cold_method if kind == 'cold' else '')
            if kind == 'warm':
                self.add(m, c, 'load_peak_rss', median([o['hwm_kb'] for o in outs]) / 1024, 'MiB')
                self.add(m, c, 'rss_after_load', median([o['rss_kb'] for o in outs]) / 1024, 'MiB')
                if 'import_s' in outs[0]:
                    self.add(m, c, 'import', median([o['import_s'] for o in outs]), 's')
        shutil.rmtree(scratch, ignore_errors=True)

    def speed(self, m):
        """Latency (batch 1), throughput (batch 32) at 1 thread and all cores, and 2/4 threads sharing
        one model. One process per contender and thread count runs all its phases; the contender
        order alternates between thread counts and repeats so drift on a shared machine hits all."""
        ncores = os.cpu_count()
        q = self.a
        spec = f'local:{self.folder(m)}'
        plans = []
        for threads in sorted({1, ncores}):
            phases = [f'1:{q.warmup}:{q.runs}:1', f'32:1:{q.batch_runs}:1']
            if threads == ncores:
                # Concurrency: intra-op pool of all cores, N callers sharing one model.
                phases += [f'1:2:{max(4, q.runs // c)}:{c}' for c in (2, 4)]
            plans.append((threads, phases))
        for rep in range(q.repeats):
            for i, (threads, phases) in enumerate(plans):
                order = list(RUNNERS)
                shift = (rep + i) % len(order)
                order = order[shift:] + order[:shift]
                for c in order:
                    if c == 'libtimm':
                        argv = self.driver('run', spec, self.ref(m), *phases, f'intra_op_threads={threads}',
                                           'inter_op_threads=1')
                    elif c == 'ort-python':
                        argv = self.py('run-ort', self.onnx(m), self.ref(m), threads, *phases)
                    else:
                        argv = self.py('run-torch', self.folder(m), self.ref(m), threads, *phases)
                    out = self.proc(argv, f'{m} run {c} threads={threads}')
                    for ph in out['phases']:
                        ph['threads'] = threads
                        ph['contender'] = c
                        self._phases.setdefault((m, c, threads, ph['batch'], ph['concurrency']), []).append(ph)
                    log(f'  {m:<28} {c:<11} threads={threads}: ' + ', '.join(
                        f'b{p["batch"]}x{p["concurrency"]} {median(p["lat_ms"]):.1f}ms' for p in out['phases']))

    def openvino(self, m):
        """libtimm backend=openvino against OpenVINO's Python API on timm's export, all cores, batch 1
        latency and batch 32 throughput, fp32 and (where the CPU has it) bf16; contenders alternate."""
        q = self.a
        ncores = os.cpu_count()
        spec = f'local:{self.folder(m)}'
        phases = [f'1:{q.warmup}:{q.runs}:1', f'32:1:{q.batch_runs}:1']
        precisions = ['fp32', 'bf16'] if has_native_bf16() else ['fp32']
        if 'bf16' not in precisions:
            # The CPU lacks native bf16: libtimm must refuse it, never emulate it silently.
            r = subprocess.run(self.driver('load', spec, 'backend=openvino', 'precision=bf16'), capture_output=True,
                               text=True, env=self.env, cwd=REPO)
            refused = r.returncode != 0 and 'bf16' in r.stderr
            self.add(m, 'libtimm-ov-bf16', 'bf16_refused_without_native_bf16', 1.0 if refused else 0.0, '',
                     note=r.stderr.strip().splitlines()[-1][:200] if r.stderr.strip() else '')
            log(f'  {m}: CPU without AMX/AVX512_BF16; libtimm bf16 refused: {refused}')
        for rep in range(q.ov_repeats):
            for prec in precisions:
                ov_prec = 'f32' if prec == 'fp32' else 'bf16'
                runs = {
                    f'libtimm-ov-{prec}': self.driver('run', spec, self.ref(m), *phases, f'intra_op_threads={ncores}',
                                                      'backend=openvino', f'precision={prec}'),
                    f'ov-python-{prec}': [self.a.openvino_python, str(REPO / 'scripts' / 'bench_peers.py'), 'run-ov',
                                          str(self.onnx(m)), str(self.ref(m)), str(ncores), ov_prec, *phases],
                }
                order = list(runs) if rep % 2 == 0 else list(runs)[::-1]
                for c in order:
                    out = self.proc(runs[c], f'{m} run {c}')
                    for ph in out['phases']:
                        ph['threads'] = ncores
                        self._phases.setdefault((m, c, ncores, ph['batch'], ph['concurrency']), []).append(ph)
                    log(f'  {m:<28} {c:<16} threads={ncores}: ' + ', '.join(
                        f'b{p["batch"]}x{p["concurrency"]} {median(p["lat_ms"]):.1f}ms' for p in out['phases']))

    def summarize_speed(self):
        for (m, c, threads, batch, conc), phs in self._phases.items():
            lat = [x for p in phs for x in p['lat_ms']]
            thr = median([p['images'] / p['wall_s'] for p in phs])
            diff = max(p['max_abs_diff'] / max(1.0, p['max_abs_ref']) for p in phs)
            kw = dict(threads=threads, concurrency=conc, batch=batch)
            if batch == 1 and conc == 1:
                self.add(m, c, 'latency_median', median(lat), 'ms', **kw)
                self.add(m, c, 'latency_p99', pct(lat, 99), 'ms', **kw)
            elif conc == 1:
                self.add(m, c, 'throughput', thr, 'img/s', **kw)
            else:
                self.add(m, c, 'throughput', thr, 'img/s', **kw)
                self.add(m, c, 'latency_median', median(lat), 'ms', **kw)
            self.add(m, c, 'max_rel_diff_vs_timm', diff, '', **kw)
            if batch == 32 and conc == 1:
                self.add(m, c, 'peak_rss_batch32', max(p['hwm_kb'] for p in phs) / 1024, 'MiB', **kw)

    def run(self):
        self._phases = {}
        started = time.time()
        self.baselines()
        for m in self.a.models:
            log(f'{m}: loads ({self.cold_method} for cold)')
            self.loads(m)
            w = self.folder(m) / 'model.safetensors'
            self.add(m, '', 'weights_file', w.stat().st_size / 2**20, 'MiB')
        for m in self.a.models:
            log(f'{m}: speed')
            self.speed(m)
        if self.a.openvino_python:
            self.env['TIMM_OPENVINO_LIBRARY'] = self.a.openvino_library
            for m in self.a.ov_models:
                log(f'{m}: openvino')
                self.openvino(m)
        self.summarize_speed()
        self.elapsed = time.time() - started


# -- reporting ------------------------------------------------------------------------------------


def machine():
    cpu = ''
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
        mem = next(int(l.split()[1]) for l in open('/proc/meminfo') if l.startswith('MemTotal'))
    except (OSError, StopIteration):
        mem = 0
    return {'cpu': cpu, 'logical_cpus': os.cpu_count(), 'memory_gib': round(mem / 2**20, 1),
            'kernel': platform.release(), 'loadavg_at_start': os.getloadavg()}


def get(records, model, contender, metric, **kw):
    for r in records:
        if r['model'] == model and r['contender'] == contender and r['metric'] == metric and all(
                str(r[k]) == str(v) for k, v in kw.items()):
            return r['value']
    return None


def ratios(records, models, ncores, base_kb):
    """Every target as libtimm / peer, with the target's bound and whether it is met."""
    rows = []

    def add(model, what, num, den, bound, le):
        if num is None or den is None or den == 0:
            return
        r = num / den
        rows.append(dict(model=model, target=what, ratio=r, bound=bound, op='<=' if le else '>=',
                         met=(r <= bound) if le else (r >= bound)))

    for m in models:
        for t in sorted({1, ncores}):
            lt = get(records, m, 'libtimm', 'latency_median', threads=t, batch=1, concurrency=1)
            add(m, f'latency b1 {t}T vs ort-python', lt,
                get(records, m, 'ort-python', 'latency_median', threads=t, batch=1, concurrency=1), 0.95, True)
            add(m, f'latency b1 {t}T vs timm-eager', lt,
                get(records, m, 'timm-eager', 'latency_median', threads=t, batch=1, concurrency=1), 0.5, True)
            tt = get(records, m, 'libtimm', 'throughput', threads=t, batch=32, concurrency=1)
            add(m, f'throughput b32 {t}T vs ort-python', tt,
                get(records, m, 'ort-python', 'throughput', threads=t, batch=32, concurrency=1), 1.0, False)
            add(m, f'throughput b32 {t}T vs timm-eager', tt,
                get(records, m, 'timm-eager', 'throughput', threads=t, batch=32, concurrency=1), 2.0, False)
        for c in (2, 4):
            tt = get(records, m, 'libtimm', 'throughput', threads=ncores, batch=1, concurrency=c)
            add(m, f'throughput {c} callers vs ort-python', tt,
                get(records, m, 'ort-python', 'throughput', threads=ncores, batch=1, concurrency=c), 1.0, False)
        for prec, bound_lat in (('fp32', 1.0), ('bf16', 1.0)):
            lt = get(records, m, f'libtimm-ov-{prec}', 'latency_median', threads=ncores, batch=1, concurrency=1)
            add(m, f'openvino {prec} latency b1 {ncores}T vs ov-python', lt,
                get(records, m, f'ov-python-{prec}', 'latency_median', threads=ncores, batch=1, concurrency=1),
                bound_lat, True)
            tt = get(records, m, f'libtimm-ov-{prec}', 'throughput', threads=ncores, batch=32, concurrency=1)
            add(m, f'openvino {prec} throughput b32 {ncores}T vs ov-python', tt,
                get(records, m, f'ov-python-{prec}', 'throughput', threads=ncores, batch=32, concurrency=1), 1.0,
                False)
        lw = get(records, m, 'libtimm', 'load_warm')
        add(m, 'load warm vs timm-python', lw, get(records, m, 'timm-python', 'load_warm'), 1 / 20, True)
        add(m, 'load warm vs ort-python', lw, get(records, m, 'ort-python', 'load_warm'), 1.0, True)
        lc = get(records, m, 'libtimm', 'load_cold')
        add(m, 'load cold vs timm-python', lc, get(records, m, 'timm-python', 'load_cold'), 1 / 20, True)
        add(m, 'load cold vs ort-python', lc, get(records, m, 'ort-python', 'load_cold'), 1.0, True)
        lf = get(records, m, 'libtimm-first', 'load_warm')
        add(m, 'first load warm vs ort-python', lf, get(records, m, 'ort-python', 'load_warm'), 1.0, True)
        # Peak and steady RSS while loading, less the trivial-session baseline, over the weights' size.
        wts = get(records, m, '', 'weights_file')
        for c, what in (('libtimm', 'cached load'), ('libtimm-map', 'cached load, map'),
                        ('libtimm-first', 'first load'), ('libtimm-map-first', 'first load, map')):
            peak = get(records, m, c, 'load_peak_rss')
            after = get(records, m, c, 'rss_after_load')
            if peak is not None and wts:
                add(m, f'{what} peak RSS over baseline / weights', peak - base_kb['libtimm'] / 1024, wts, 1.25,
                    True)
            if after is not None and wts:
                add(m, f'{what} RSS after over baseline / weights', after - base_kb['libtimm'] / 1024, wts, 1.1,
                    True)
    return rows


def fmt(v, unit=''):
    if v is None:
        return '-'
    if unit == 's':
        return f'{v * 1000:.0f} ms' if v < 10 else f'{v:.1f} s'
    if abs(v) >= 100:
        return f'{v:.0f}'
    return f'{v:.3g}' if abs(v) < 10 else f'{v:.1f}'


def markdown(res):
    recs, models, ncores = res['records'], res['models'], res['machine']['logical_cpus']
    mc = res['machine']
    L = []
    L.append(f'Run {res["started"]} on {mc["cpu"]}, {mc["logical_cpus"]} logical CPUs, {mc["memory_gib"]} GiB; '
             f'load average at start {", ".join(f"{x:.1f}" for x in mc["loadavg_at_start"])}. '
             f'{res["note"]} Mode: {res["mode"]}; cold loads: {res["cold_method"]}; took {res["elapsed_s"] / 60:.1f} min.')
    L.append('')
    L.append('Latency at batch 1 (median / p99, ms) and throughput at batch 32 (images/s):')
    L.append('')
    hdr = ['model', 'threads', *(f'{c} lat' for c in RUNNERS), *(f'{c} b32' for c in RUNNERS)]
    L.append('| ' + ' | '.join(hdr) + ' |')
    L.append('|' + '---|' * len(hdr))
    for m in models:
        for t in sorted({1, ncores}):
            cells = [m, str(t)]
            for c in RUNNERS:
                med = get(recs, m, c, 'latency_median', threads=t, batch=1, concurrency=1)
                p99 = get(recs, m, c, 'latency_p99', threads=t, batch=1, concurrency=1)
                cells.append(f'{fmt(med)} / {fmt(p99)}')
            for c in RUNNERS:
                cells.append(fmt(get(recs, m, c, 'throughput', threads=t, batch=32, concurrency=1)))
            L.append('| ' + ' | '.join(cells) + ' |')
    L.append('')
    L.append(f'Callers sharing one model ({ncores} intra-op threads, batch 1): throughput, images/s:')
    L.append('')
    hdr = ['model', *(f'{c} x{n}' for n in (2, 4) for c in RUNNERS)]
    L.append('| ' + ' | '.join(hdr) + ' |')
    L.append('|' + '---|' * len(hdr))
    for m in models:
        cells = [m] + [fmt(get(recs, m, c, 'throughput', threads=ncores, batch=1, concurrency=n))
                       for n in (2, 4) for c in RUNNERS]
        L.append('| ' + ' | '.join(cells) + ' |')
    L.append('')
    ov = [c for c in ('libtimm-ov-fp32', 'ov-python-fp32', 'libtimm-ov-bf16', 'ov-python-bf16')
          if any(r['contender'] == c for r in recs)]
    if ov:
        flags = cpu_flags()
        feats = ', '.join(f for f in ('amx_bf16', 'amx_tile', 'avx512_bf16', 'avx512f') if f in flags) or 'none of them'
        L.append(f'OpenVINO backend ({ncores} threads): latency at batch 1 (median / p99, ms) and throughput at '
                 f'batch 32 (images/s). CPU bf16 features (amx_bf16, amx_tile, avx512_bf16, avx512f): {feats}.')
        L.append('')
        hdr = ['model', *(f'{c} lat' for c in ov), *(f'{c} b32' for c in ov)]
        L.append('| ' + ' | '.join(hdr) + ' |')
        L.append('|' + '---|' * len(hdr))
        for m in res['ov_models']:
            cells = [m]
            for c in ov:
                med = get(recs, m, c, 'latency_median', threads=ncores, batch=1, concurrency=1)
                p99 = get(recs, m, c, 'latency_p99', threads=ncores, batch=1, concurrency=1)
                cells.append(f'{fmt(med)} / {fmt(p99)}')
            cells += [fmt(get(recs, m, c, 'throughput', threads=ncores, batch=32, concurrency=1)) for c in ov]
            L.append('| ' + ' | '.join(cells) + ' |')
        refused = [r for r in recs if r['metric'] == 'bf16_refused_without_native_bf16']
        if refused:
            ok = all(r['value'] == 1.0 for r in refused)
            L.append('')
            L.append(f'bf16 not measured: this CPU has no native bf16. libtimm refused `precision=bf16` on every '
                     f'model: {"yes" if ok else "**no**"} ({refused[0]["note"]}).')
        L.append('')
    L.append('Load (fresh process each; timm-python includes `import timm`, ort-python is the '
             '`InferenceSession` call after `import onnxruntime`, libtimm is the `timm_create_model` call, '
             'which also loads the ORT library) and memory (MiB):')
    L.append('')
    L.append('`libtimm` and `libtimm-map` (`weights_memory=map`) load from the optimised-model cache, as '
             'every load after the first does; the `-first` columns start from an empty cache (the load '
             'builds, optimises and writes the entry).')
    L.append('')
    cs = ['libtimm', 'libtimm-map', 'libtimm-first', 'libtimm-map-first', 'ort-python', 'timm-python']
    hdr = ['model', 'weights', *(f'{c} warm' for c in cs), *(f'{c} cold' for c in cs),
           *(f'{c} peak RSS' for c in cs), *(f'{c} RSS after' for c in cs)]
    L.append('| ' + ' | '.join(hdr) + ' |')
    L.append('|' + '---|' * len(hdr))
    for m in models:
        cells = [m, fmt(get(recs, m, '', 'weights_file'))]
        cells += [fmt(get(recs, m, c, 'load_warm'), 's') for c in cs]
        cells += [fmt(get(recs, m, c, 'load_cold'), 's') for c in cs]
        cells += [fmt(get(recs, m, c, 'load_peak_rss')) for c in cs]
        cells += [fmt(get(recs, m, c, 'rss_after_load')) for c in cs]
        L.append('| ' + ' | '.join(cells) + ' |')
    L.append('')
    b = res['baseline_kb']
    L.append(f'ORT baseline (peak RSS of a process that loaded ORT and made a trivial session): libtimm '
             f'{b["libtimm"] / 1024:.1f} MiB, onnxruntime-python {b["ort-python"] / 1024:.1f} MiB.')
    L.append('')
    L.append('Targets (ratio = libtimm / peer):')
    L.append('')
    L.append('| model | target | ratio | bound | met |')
    L.append('|---|---|---|---|---|')
    for r in res['ratios']:
        L.append(f'| {r["model"]} | {r["target"]} | {r["ratio"]:.3f} | {r["op"]} {r["bound"]:.3g} | '
                 f'{"yes" if r["met"] else "**no**"} |')
    L.append('')
    worst = max((r for r in res['records'] if r['metric'] == 'max_rel_diff_vs_timm'), key=lambda r: r['value'],
                default=None)
    if worst:
        L.append(f'Every contender was checked against timm\'s logits on every run: largest difference '
                 f'{worst["value"]:.2g} relative to the largest logit ({worst["contender"]}, {worst["model"]}).')
    return '\n'.join(L) + '\n'


def plot(res, path):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        log('matplotlib is not installed; no plot')
        return False
    recs, models, ncores = res['records'], res['models'], res['machine']['logical_cpus']
    panels = [(f'latency b1, 1 thread (ms, lower is better)', 'latency_median', dict(threads=1, batch=1, concurrency=1), RUNNERS),
              (f'latency b1, {ncores} threads (ms)', 'latency_median', dict(threads=ncores, batch=1, concurrency=1), RUNNERS),
              (f'throughput b32, {ncores} threads (img/s, higher is better)', 'throughput',
               dict(threads=ncores, batch=32, concurrency=1), RUNNERS),
              ('load, warm (s, log)', 'load_warm', {}, ('libtimm', 'ort-python', 'timm-python'))]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    colors = {'libtimm': '#1f77b4', 'ort-python': '#ff7f0e', 'timm-eager': '#2ca02c', 'timm-python': '#2ca02c'}
    for ax, (title, metric, kw, cs) in zip(axes.flat, panels):
        w = 0.8 / len(cs)
        for i, c in enumerate(cs):
            vals = [get(recs, m, c, metric, **kw) or 0 for m in models]
            ax.bar([j + i * w for j in range(len(models))], vals, w, label=c, color=colors[c])
        ax.set_title(title)
        ax.set_xticks([j + w * (len(cs) - 1) / 2 for j in range(len(models))])
        ax.set_xticklabels([m.replace('_patch16_224', '').replace('.in1k', '') for m in models], rotation=20,
                           fontsize=8)
        if metric == 'load_warm':
            ax.set_yscale('log')
        ax.legend(fontsize=8)
    fig.suptitle(f'libtimm vs onnxruntime-python vs timm eager — {res["machine"]["cpu"]}, '
                 f'{ncores} CPUs (shared machine), {res["started"]}', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help=f'fewer repetitions, models {QUICK_MODELS}')
    ap.add_argument('--models', help='comma-separated model names (folders under .bench/models)')
    ap.add_argument('--bench', default=str(REPO / '.bench'))
    ap.add_argument('--out', default=str(REPO / '.bench' / 'results'))
    ap.add_argument('--summary-dir', default=str(REPO / 'bench'),
                    help='where RESULTS.md and results.png go (default bench/, committed)')
    ap.add_argument('--driver', required=True)
    ap.add_argument('--python', required=True, help='python with torch, timm, onnxruntime (the generator venv)')
    ap.add_argument('--ort-library', required=True)
    ap.add_argument('--cold', choices=['auto', 'none'], default='auto')
    ap.add_argument('--openvino-python', help='python with openvino (the bench venv); enables the OpenVINO rows')
    ap.add_argument('--openvino-library', help="libopenvino_c.so that libtimm's backend=openvino loads")
    args = ap.parse_args()
    quick = args.quick
    given = args.models.split(',') if args.models else None
    args.models = given or (QUICK_MODELS if quick else MODELS)
    # The OpenVINO rows have their own list (vit_base_patch16_224 is measured there only); --models
    # narrows both.
    args.ov_models = [m for m in (given or (QUICK_MODELS if quick else OV_MODELS)) if m in OV_MODELS]
    args.warmup = 3 if quick else 5
    args.runs = 20 if quick else 50
    args.batch_runs = 1 if quick else 3
    args.repeats = 1
    # The OpenVINO targets compare one engine with itself (our graph against timm's export), so
    # they sit near 1.0 where one process each lands either side of it on a shared machine: the
    # contenders alternate this many times and every run's samples are pooled.
    args.ov_repeats = 1 if quick else 3
    args.load_reps = 2 if quick else 3
    args.cold_reps = 1 if quick else 2
    for m in dict.fromkeys(args.models + (args.ov_models if args.openvino_python else [])):
        for p in (Path(args.bench) / 'models' / m / 'model.safetensors', Path(args.bench) / 'onnx' / f'{m}.onnx'):
            if not p.is_file():
                raise SystemExit(f'error: {p} is missing; run scripts/bench (it writes the models first)')

    started = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
    b = Bench(args)
    b.run()
    res = {
        'started': started, 'mode': 'quick' if quick else 'full', 'machine': machine(),
        'note': 'The machine was shared with other engineers running builds and tests, so absolute times are '
                'noisy; contenders alternate and figures are medians.',
        'cold_method': b.cold_method, 'elapsed_s': b.elapsed, 'models': args.models,
        'ov_models': args.ov_models if args.openvino_python else [],
        'baseline_kb': b.base_kb, 'records': b.records, 'cpu_flags_bf16': has_native_bf16(),
        'settings': {k: getattr(args, k) for k in ('warmup', 'runs', 'batch_runs', 'repeats', 'ov_repeats', 'load_reps', 'cold_reps')},
    }
    res['ratios'] = ratios(b.records, list(dict.fromkeys(args.models + res['ov_models'])), os.cpu_count(),
                           b.base_kb)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    (out / f'{stamp}.json').write_text(json.dumps({**res, 'samples': b.samples}, indent=1))
    with open(out / f'{stamp}.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(b.records[0]))
        w.writeheader()
        w.writerows(b.records)
    for ext in ('json', 'csv'):
        shutil.copyfile(out / f'{stamp}.{ext}', out / f'latest.{ext}')
    md = markdown(res)
    summary = Path(args.summary_dir)
    summary.mkdir(parents=True, exist_ok=True)
    (summary / 'RESULTS.md').write_text(
        '# Benchmark results\n\nWritten by `scripts/bench` (do not edit by hand; rerun it).\n\n'
        + md + '\n![results](results.png)\n')
    shutil.copyfile(out / f'{stamp}.csv', summary / 'results.csv')
    plot(res, summary / 'results.png')
    print(md)
    print(f'raw results: {out / stamp}.json / .csv; summary: {summary / "RESULTS.md"}, {summary / "results.png"}')


if __name__ == '__main__':
    main()
