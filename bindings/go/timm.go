// Package timm runs timm (PyTorch Image Models) image models through libtimm, on ONNX Runtime.
//
// cgo finds libtimm with pkg-config; point it at the install:
//
//	PKG_CONFIG_PATH=<prefix>/lib/pkgconfig go build
//
// A Model is safe for concurrent use by many goroutines. Close it when done (a finalizer frees
// forgotten models, but only when the garbage collector gets to them).
package timm

/*
#cgo pkg-config: timm
#include <stdlib.h>
#include <timm.h>

TimmStatus timm_go_set_progress(TimmOptions *options, uintptr_t handle);
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"strings"
	"sync"
	"unsafe"
)

// Version is the libtimm version, e.g. "0.1.0".
func Version() string { return C.GoString(C.timm_version()) }

// lastError builds the error for a failed call. It must run on the OS thread of that call,
// because timm_last_error() is per thread: callers hold runtime.LockOSThread across both.
func lastError(status Status) error {
	return &Error{Status: status, Message: C.GoString(C.timm_last_error())}
}

// call runs one fallible C call and reads its message on the same OS thread (a goroutine may
// otherwise move to another thread between the two cgo calls and read a stale message).
func call(f func() Status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if st := f(); st != StatusOK {
		return lastError(st)
	}
	return nil
}

// Option configures CreateModel.
type Option func(*config)

type config struct {
	entries  [][2]string // applied in order; a later value for a key wins
	progress func(done, total uint64)
}

// WithOption sets any libtimm option by key (see timm_options_set in timm.h). An unknown key
// or a bad value makes CreateModel fail with ErrInvalidArgument.
func WithOption(key, value string) Option {
	return func(c *config) { c.entries = append(c.entries, [2]string{key, value}) }
}

// WithThreads is WithIntraOpThreads: ONNX Runtime's threads inside one operator (0: one per
// physical core). The other With* helpers, one per option, are in options.go.
func WithThreads(n int) Option { return WithIntraOpThreads(n) }

// WithGraphOptimization is WithGraphOptimizationLevel.
func WithGraphOptimization(level GraphOptimizationLevel) Option {
	return WithGraphOptimizationLevel(level)
}

// WithProgress calls fn with the bytes done and total of each file downloaded for an hf-hub:
// spec, on the goroutine running CreateModel.
func WithProgress(fn func(done, total uint64)) Option {
	return func(c *config) { c.progress = fn }
}

//export timmGoProgress
func timmGoProgress(done, total C.uint64_t, handle C.uintptr_t) {
	fn := cgo.Handle(handle).Value().(func(done, total uint64))
	fn(uint64(done), uint64(total))
}

// Model is a loaded model. Its methods are safe for concurrent use; Close waits for running
// calls, and every call after Close returns ErrClosed.
type Model struct {
	mu sync.RWMutex // read-held by every call using h; write-held by Close
	h  *C.TimmModel

	// Fixed at creation, so reading them needs no C call and no lock.
	outputDim     int
	numClasses    int
	inputSize     [3]int64
	dataInputSize [3]int64 // what Preprocess writes (equals inputSize)
}

// CreateModel loads a model: spec is "local:<folder>", "hf-hub:org/name[@revision]" or a timm
// name (see timm_model_create in timm.h).
func CreateModel(spec string, pretrained bool, opts ...Option) (*Model, error) {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}

	// C strings end at the first NUL: refuse strings that would be silently cut short.
	if strings.IndexByte(spec, 0) >= 0 {
		return nil, invalidArgument("the model spec contains a NUL byte")
	}
	for _, kv := range cfg.entries {
		if strings.IndexByte(kv[0], 0) >= 0 || strings.IndexByte(kv[1], 0) >= 0 {
			return nil, invalidArgument(fmt.Sprintf("option %q contains a NUL byte", kv[0]))
		}
	}

	copts := C.timm_options_new()
	if copts == nil {
		return nil, &Error{Status: StatusInternal, Message: "TIMM_ERR_INTERNAL: timm_options_new failed (out of memory)"}
	}
	defer C.timm_options_free(copts)
	for _, kv := range cfg.entries {
		ck, cv := C.CString(kv[0]), C.CString(kv[1])
		err := call(func() Status { return Status(C.timm_options_set(copts, ck, cv)) })
		C.free(unsafe.Pointer(ck))
		C.free(unsafe.Pointer(cv))
		if err != nil {
			return nil, err
		}
	}
	if cfg.progress != nil {
		// Only used during timm_model_create below, which copies the options.
		h := cgo.NewHandle(cfg.progress)
		defer h.Delete()
		if err := call(func() Status { return Status(C.timm_go_set_progress(copts, C.uintptr_t(h))) }); err != nil {
			return nil, err
		}
	}

	cspec := C.CString(spec)
	defer C.free(unsafe.Pointer(cspec))
	var h *C.TimmModel
	if err := call(func() Status { return Status(C.timm_model_create(cspec, C.bool(pretrained), copts, &h)) }); err != nil {
		return nil, err
	}

	m := &Model{
		h:          h,
		outputDim:  int(C.timm_model_output_dim(h)),
		numClasses: int(C.timm_model_num_classes(h)),
	}
	var chw [3]C.int64_t
	if err := call(func() Status { return Status(C.timm_model_input_size(h, &chw[0])) }); err != nil {
		C.timm_free(h)
		return nil, err
	}
	m.inputSize = [3]int64{int64(chw[0]), int64(chw[1]), int64(chw[2])}
	m.dataInputSize = m.inputSize // timm_model_input_size already is what Preprocess writes
	runtime.SetFinalizer(m, (*Model).finalize)
	return m, nil
}

// finalize frees a model that was never closed. By then no goroutine can hold it.
func (m *Model) finalize() { _ = m.Close() }

// Close frees the model, waiting for calls in progress. It is idempotent and safe to call
// concurrently with other methods, which return ErrClosed afterwards.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h == nil {
		return nil
	}
	C.timm_free(m.h)
	m.h = nil
	runtime.SetFinalizer(m, nil)
	return nil
}

// OutputDim is the number of floats per image that Infer returns (classes, or features).
func (m *Model) OutputDim() int { return m.outputDim }

// NumClasses is the classifier's class count.
func (m *Model) NumClasses() int { return m.numClasses }

// InputSize is the {C, H, W} the model takes and Preprocess writes: the config's input_size, or its test_input_size with WithUseTestSize(true).
func (m *Model) InputSize() [3]int64 { return m.inputSize }

// Label returns the name of class i, and false when the config has none (or after Close).
func (m *Model) Label(i int) (string, bool) {
	return m.str(func(h *C.TimmModel) *C.char { return C.timm_model_label(h, C.size_t(i)) }, i)
}

// Description returns the description of class i, and false when the config has none.
func (m *Model) Description(i int) (string, bool) {
	return m.str(func(h *C.TimmModel) *C.char { return C.timm_model_label_description(h, C.size_t(i)) }, i)
}

func (m *Model) str(get func(*C.TimmModel) *C.char, i int) (string, bool) {
	if i < 0 {
		return "", false
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return "", false
	}
	// Copied while the read lock keeps the model (which owns the string) alive.
	s := get(m.h)
	if s == nil {
		return "", false
	}
	return C.GoString(s), true
}

// ConfigJSON is the resolved config as JSON.
func (m *Model) ConfigJSON() (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return "", ErrClosed
	}
	return C.GoString(C.timm_model_config_json(m.h)), nil
}

// Infer runs a preprocessed NCHW batch (see Preprocess) (shape = {N, C, H, W}, len(input) = N*C*H*W) and
// returns N*OutputDim() floats ([N, OutputDim()], row-major).
func (m *Model) Infer(input []float32, shape []int64) ([]float32, error) {
	if _, ok := elements(shape); !ok {
		return nil, invalidArgument(fmt.Sprintf("input shape %v is not a valid NCHW shape", shape))
	}
	out := make([]float32, int(shape[0])*m.outputDim)
	if err := m.InferInto(input, shape, out); err != nil {
		return nil, err
	}
	return out, nil
}

// InferInto is Infer writing into out, which must hold at least N*OutputDim() floats.
func (m *Model) InferInto(input []float32, shape []int64, out []float32) error {
	// C cannot see slice lengths: check here that it will not read past input.
	n, ok := elements(shape)
	if !ok {
		return invalidArgument(fmt.Sprintf("input shape %v is not a valid NCHW shape", shape))
	}
	if n != len(input) {
		return invalidArgument(fmt.Sprintf("input has %d floats but shape %v needs %d", len(input), shape, n))
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return ErrClosed
	}
	// Go memory without Go pointers may be passed to C for the duration of the call.
	var in *C.float
	if len(input) > 0 {
		in = (*C.float)(unsafe.Pointer(&input[0]))
	}
	var o *C.float
	if len(out) > 0 {
		o = (*C.float)(unsafe.Pointer(&out[0]))
	}
	err := call(func() Status {
		return Status(C.timm_infer(m.h, in, (*C.int64_t)(unsafe.Pointer(&shape[0])), C.size_t(len(shape)), o, C.size_t(len(out))))
	})
	runtime.KeepAlive(input)
	runtime.KeepAlive(out)
	return err
}

// elements is the product of shape, false for an empty shape, a negative dimension or overflow.
func elements(shape []int64) (int, bool) {
	if len(shape) == 0 {
		return 0, false
	}
	n := int64(1)
	for _, d := range shape {
		if d < 0 || (d != 0 && n > (1<<62)/d) {
			return 0, false
		}
		n *= d
	}
	return int(n), true
}

// Tensor is one output of InferOutputs: row-major data and its shape (NCHW for a feature map).
type Tensor struct {
	Shape []int64
	Data  []float32
}

// FeatureInfo is timm's feature_info of one feature map (WithOutput(OutputFeatureMaps)).
type FeatureInfo struct {
	Channels  int
	Reduction int    // the map's input stride
	Module    string // timm's module name: layer2, stages.1, blocks.11, ...
}

// OutputCount is the number of outputs: 1 for logits and features, one per feature map.
func (m *Model) OutputCount() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return 0
	}
	return int(C.timm_model_output_count(m.h))
}

// OutputShape is the shape output i has for an input of inputShape (NCHW).
func (m *Model) OutputShape(i int, inputShape []int64) ([]int64, error) {
	if i < 0 || len(inputShape) == 0 {
		return nil, invalidArgument(fmt.Sprintf("output %d of input shape %v", i, inputShape))
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return nil, ErrClosed
	}
	return m.outputShape(i, inputShape)
}

// outputShape needs m.mu read-held.
func (m *Model) outputShape(i int, inputShape []int64) ([]int64, error) {
	var dims [8]C.int64_t
	var ndim C.size_t
	err := call(func() Status {
		return Status(C.timm_model_output_shape(m.h, C.size_t(i), (*C.int64_t)(unsafe.Pointer(&inputShape[0])),
			C.size_t(len(inputShape)), &dims[0], C.size_t(len(dims)), &ndim))
	})
	if err != nil {
		return nil, err
	}
	out := make([]int64, int(ndim))
	for j := range out {
		out[j] = int64(dims[j])
	}
	return out, nil
}

// InferOutputs runs a batch and returns every output, shaped: the feature maps of a model
// created with WithOutput(OutputFeatureMaps), or the single logits/features tensor. Safe for
// concurrent use.
func (m *Model) InferOutputs(input []float32, shape []int64) ([]Tensor, error) {
	n, ok := elements(shape)
	if !ok || n == 0 {
		return nil, invalidArgument(fmt.Sprintf("input shape %v is not a valid NCHW shape", shape))
	}
	if n != len(input) {
		return nil, invalidArgument(fmt.Sprintf("input has %d floats but shape %v needs %d", len(input), shape, n))
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return nil, ErrClosed
	}
	count := int(C.timm_model_output_count(m.h))
	outs := make([]Tensor, count)
	// The pointer array is Go memory holding Go pointers: each one must be pinned.
	var pin runtime.Pinner
	defer pin.Unpin()
	ptrs := make([]*C.float, count)
	lens := make([]C.size_t, count)
	for i := range outs {
		s, err := m.outputShape(i, shape)
		if err != nil {
			return nil, err
		}
		size, ok := elements(s)
		if !ok || size == 0 {
			return nil, invalidArgument(fmt.Sprintf("output %d has shape %v", i, s))
		}
		outs[i] = Tensor{Shape: s, Data: make([]float32, size)}
		pin.Pin(&outs[i].Data[0])
		ptrs[i] = (*C.float)(unsafe.Pointer(&outs[i].Data[0]))
		lens[i] = C.size_t(size)
	}
	err := call(func() Status {
		return Status(C.timm_infer_outputs(m.h, (*C.float)(unsafe.Pointer(&input[0])),
			(*C.int64_t)(unsafe.Pointer(&shape[0])), C.size_t(len(shape)), &ptrs[0], &lens[0], C.size_t(count)))
	})
	runtime.KeepAlive(input)
	if err != nil {
		return nil, err
	}
	return outs, nil
}

// FeatureInfo is timm's feature_info of each output (empty unless the model returns feature maps).
func (m *Model) FeatureInfo() ([]FeatureInfo, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return nil, ErrClosed
	}
	var out []FeatureInfo
	for i := 0; i < int(C.timm_model_output_count(m.h)); i++ {
		var ch, red C.size_t
		var module *C.char
		if Status(C.timm_model_feature_info(m.h, C.size_t(i), &ch, &red, &module)) != StatusOK {
			return nil, nil
		}
		out = append(out, FeatureInfo{Channels: int(ch), Reduction: int(red), Module: C.GoString(module)})
	}
	return out, nil
}
