"""Loads ONNX files libtimm exported in ONNX Runtime and OpenVINO (their own Python packages)
and checks them against timm's reference logits, onnx.checker, and the metadata written.

Usage: python export_interop.py MANIFEST.json
The manifest lists cases: {"file", "input", "input_shape", "logits", "tol", "metadata",
"other_size": [H, W] or null, "triton": config.pbtxt path or null}.
Prints one line per case and exits 1 if any check failed.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov


def read_f32(path, shape):
    return np.fromfile(path, dtype="<f4").reshape(shape)


def check_triton(pbtxt, model, max_batch):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    cfg = text_format.Parse(open(pbtxt).read(), mc.ModelConfig())
    assert cfg.backend == "onnxruntime", cfg.backend
    assert cfg.max_batch_size == max_batch, cfg.max_batch_size
    assert cfg.HasField("dynamic_batching") == (max_batch > 0)

    def dims(vi):
        out = []
        for d in vi.type.tensor_type.shape.dim:
            out.append(d.dim_value if d.HasField("dim_value") else -1)
        return out[1:] if max_batch > 0 else out

    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    for got, want in ((cfg.input, graph_inputs), (cfg.output, model.graph.output)):
        assert [t.name for t in got] == [v.name for v in want], (got, want)
        for t, v in zip(got, want):
            assert list(t.dims) == dims(v), (t.name, list(t.dims), dims(v))
            assert t.data_type == mc.TYPE_FP32


def run_case(case, core):
    path = case["file"]
    # By path, so external data is checked too.
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    for k, v in case["metadata"].items():
        assert meta.get(k) == v, f"metadata {k}: {meta.get(k)!r} != {v!r}"
    opsets = {o.domain: o.version for o in model.opset_import}
    if case.get("portable", True):
        assert set(opsets) <= {"", "ai.onnx"} and opsets.get("", 0) <= 17, opsets
    if case.get("triton"):
        check_triton(case["triton"], model, case["max_batch"])

    x = read_f32(case["input"], case["input_shape"])
    want = read_f32(case["logits"], case["logits_shape"])
    tol = case["tol"]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    # f32 on every CPU: OpenVINO would otherwise pick bf16 where the CPU has it.
    compiled = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    worst = {}
    for batch in (x.shape[0], 1):
        xb, wb = x[:batch], want[:batch]
        got_ort = sess.run(None, {in_name: xb})[0]
        got_ov = compiled(xb)[0]
        for name, got in (("ort", got_ort), ("openvino", got_ov)):
            assert got.shape == wb.shape, f"{name} batch {batch}: shape {got.shape} != {wb.shape}"
            # Relative to the largest logit (at least 1), the criterion timm parity is judged by.
            d = float(np.abs(got - wb).max()) / max(1.0, float(np.abs(wb).max()))
            worst[name] = max(worst.get(name, 0.0), d)
            assert d <= tol, f"{name} batch {batch}: relative max|diff| {d:.3e} > {tol}"
    # A graph built for one size (a relative-position table inside a convnet) declares it.
    inits = {i.name for i in model.graph.initializer}
    x_in = next(i for i in model.graph.input if i.name not in inits)
    free_hw = not any(d.HasField("dim_value") for d in x_in.type.tensor_type.shape.dim[2:])
    if case.get("other_size") and free_hw:
        h, w = case["other_size"]
        rng = np.random.default_rng(0)
        xo = rng.standard_normal((2, x.shape[1], h, w)).astype(np.float32)
        a = sess.run(None, {in_name: xo})[0]
        b = compiled(xo)[0]
        assert a.shape[0] == 2 and np.isfinite(a).all()
        # Relative: random inputs drive untrained fixtures to logits in the thousands.
        d = float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max())))
        # Two runtimes against each other on inputs the fixture never saw: their kernels differ
        # (AMX / AVX-512 paths), so 1e-3 rather than timm's 1e-4.
        assert d <= max(tol, 1e-3), f"size {h}x{w}: ORT and OpenVINO differ by {d:.3e} (relative)"
        worst["other_size"] = d
    return worst


def main():
    cases = json.load(open(sys.argv[1]))
    core = ov.Core()
    failed = 0
    for case in cases:
        print(f"...  {case['name']}", file=sys.stderr, flush=True)
        try:
            worst = run_case(case, core)
            print(f"ok   {case['name']:<44} " + " ".join(f"{k}={v:.2e}" for k, v in worst.items()))
        except Exception as e:  # report every case, then fail
            failed += 1
            print(f"FAIL {case['name']:<44} {type(e).__name__}: {e}")
    print(f"{len(cases) - failed}/{len(cases)} exported files load and match "
          f"(onnxruntime {ort.__version__}, openvino {ov.__version__}, onnx {onnx.__version__})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
