package timm_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	timm "github.com/libtimm/timm/bindings/go"
)

const tolerance = 1e-4

// fixturesDir is the repository's tests/fixtures (TIMM_FIXTURES_DIR overrides it).
func fixturesDir(t testing.TB) string {
	if d := os.Getenv("TIMM_FIXTURES_DIR"); d != "" {
		return d
	}
	d, err := filepath.Abs(filepath.Join("..", "..", "tests", "fixtures"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type fixture struct {
	Name      string            `json:"name"`
	Folders   map[string]string `json:"folders"`
	Reference string            `json:"reference"`
}

type reference struct {
	input, logits           []float32
	inputShape, logitsShape []int64
}

// testFixtures lists the test_* fixtures of tests/fixtures/index.json.
func testFixtures(t testing.TB) []fixture {
	var index struct {
		Fixtures []fixture `json:"fixtures"`
	}
	data, err := os.ReadFile(filepath.Join(fixturesDir(t), "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		t.Fatal(err)
	}
	var out []fixture
	for _, f := range index.Fixtures {
		if strings.HasPrefix(f.Name, "test_") {
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		t.Fatal("no test_* fixtures in index.json")
	}
	return out
}

func resnet(t testing.TB) fixture {
	for _, f := range testFixtures(t) {
		if f.Name == "test_resnet" {
			return f
		}
	}
	t.Fatal("no test_resnet fixture")
	return fixture{}
}

func (f fixture) spec(t testing.TB) string {
	return "local:" + filepath.Join(fixturesDir(t), f.Folders["native"])
}

func readF32(t testing.TB, path string) []float32 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func (f fixture) reference(t testing.TB) reference {
	dir := filepath.Join(fixturesDir(t), f.Reference)
	var meta struct {
		InputShape  []int64 `json:"input_shape"`
		LogitsShape []int64 `json:"logits_shape"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		t.Fatal(err)
	}
	return reference{
		input: readF32(t, filepath.Join(dir, "input.f32")), logits: readF32(t, filepath.Join(dir, "logits.f32")),
		inputShape: meta.InputShape, logitsShape: meta.LogitsShape,
	}
}

func maxAbsDiff(t testing.TB, a, b []float32) float64 {
	if len(a) != len(b) {
		t.Fatalf("length %d != %d", len(a), len(b))
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func mustCreate(t testing.TB, spec string, opts ...timm.Option) *timm.Model {
	t.Helper()
	m, err := timm.CreateModel(spec, true, opts...)
	if err != nil {
		t.Fatalf("CreateModel(%s): %v", spec, err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestVersion(t *testing.T) {
	if v := timm.Version(); v == "" || strings.Count(v, ".") != 2 {
		t.Fatalf("Version() = %q, want x.y.z", v)
	}
}

func TestFixtureLogits(t *testing.T) {
	for _, f := range testFixtures(t) {
		f := f
		t.Run(f.Name, func(t *testing.T) {
			r := f.reference(t)
			m := mustCreate(t, f.spec(t))
			if got := m.InputSize(); got[0] != r.inputShape[1] {
				t.Errorf("InputSize() = %v, reference input %v", got, r.inputShape)
			}
			if m.OutputDim() != int(r.logitsShape[1]) {
				t.Errorf("OutputDim() = %d, want %d", m.OutputDim(), r.logitsShape[1])
			}
			out, err := m.Infer(r.input, r.inputShape)
			if err != nil {
				t.Fatal(err)
			}
			if d := maxAbsDiff(t, out, r.logits); d > tolerance {
				t.Fatalf("logits differ from timm by %g", d)
			}
			into := make([]float32, len(r.logits)+3) // a larger buffer is fine
			if err := m.InferInto(r.input, r.inputShape, into); err != nil {
				t.Fatal(err)
			}
			if d := maxAbsDiff(t, into[:len(r.logits)], out); d != 0 {
				t.Fatalf("InferInto differs from Infer by %g", d)
			}
		})
	}
}

func TestAccessors(t *testing.T) {
	m := mustCreate(t, resnet(t).spec(t), timm.WithThreads(1))
	if m.NumClasses() != 10 || m.OutputDim() != 10 {
		t.Errorf("NumClasses() = %d, OutputDim() = %d, want 10, 10", m.NumClasses(), m.OutputDim())
	}
	// test_resnet's config.json input_size (the fixtures are generated at 64x64).
	if got := m.InputSize(); got != [3]int64{3, 64, 64} {
		t.Errorf("InputSize() = %v", got)
	}
	if _, ok := m.Label(1000); ok {
		t.Error("Label(1000) exists for a 10-class model")
	}
	if _, ok := m.Description(-1); ok {
		t.Error("Description(-1) exists")
	}
	js, err := m.ConfigJSON()
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(js), &cfg); err != nil {
		t.Fatalf("ConfigJSON is not JSON: %v", err)
	}
	if cfg["architecture"] != "test_resnet" {
		t.Errorf("architecture = %v", cfg["architecture"])
	}
}

func TestConcurrentInferEqualsSequential(t *testing.T) {
	f := resnet(t)
	r := f.reference(t)
	m := mustCreate(t, f.spec(t))
	want, err := m.Infer(r.input, r.inputShape)
	if err != nil {
		t.Fatal(err)
	}
	const goroutines, iterations = 16, 50
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]float32, len(want))
			for i := 0; i < iterations; i++ {
				if err := m.InferInto(r.input, r.inputShape, out); err != nil {
					errs <- err
					return
				}
				for j := range out {
					if out[j] != want[j] {
						errs <- errors.New("concurrent result differs from the sequential one")
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Errors from different goroutines carry their own messages: each is read on the OS thread
// of its own failing call.
func TestConcurrentErrorsKeepTheirMessages(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		g := g
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				var err error
				var want error
				var needle string
				if g%2 == 0 {
					needle = "no_such_model_" + string(rune('a'+g))
					_, err = timm.CreateModel("local:"+filepath.Join(fixturesDir(t), "models", needle), true)
					want = timm.ErrNotFound
				} else {
					needle = "bogus_key_" + string(rune('a'+g))
					_, err = timm.CreateModel("local:/x", true, timm.WithOption(needle, "1"))
					want = timm.ErrInvalidArgument
				}
				if !errors.Is(err, want) || !strings.Contains(err.Error(), needle) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("wrong or foreign error: %v", err)
	}
}

func TestErrors(t *testing.T) {
	dir := fixturesDir(t)
	_, err := timm.CreateModel("local:"+filepath.Join(dir, "models", "no_such_model"), true)
	var te *timm.Error
	if !errors.Is(err, timm.ErrNotFound) || !errors.As(err, &te) || te.Status != timm.StatusNotFound {
		t.Fatalf("missing folder: %v, want ErrNotFound", err)
	}
	if !strings.HasPrefix(err.Error(), "TIMM_ERR_NOT_FOUND: ") {
		t.Errorf("message %q lacks the status prefix", err)
	}
	if errors.Is(err, timm.ErrInvalidArgument) {
		t.Error("a NOT_FOUND error matches ErrInvalidArgument")
	}

	if _, err := timm.CreateModel(resnet(t).spec(t), true, timm.WithOption("no_such_option", "1")); !errors.Is(err, timm.ErrInvalidArgument) {
		t.Errorf("bad option key: %v, want ErrInvalidArgument", err)
	}
	if _, err := timm.CreateModel(resnet(t).spec(t), true, timm.WithThreads(-1)); !errors.Is(err, timm.ErrInvalidArgument) {
		t.Errorf("negative threads: %v, want ErrInvalidArgument", err)
	}
	// A NUL would cut the C string short and load a different folder: refused.
	if _, err := timm.CreateModel(resnet(t).spec(t)+"\x00/x", true); !errors.Is(err, timm.ErrInvalidArgument) {
		t.Errorf("spec with NUL: %v, want ErrInvalidArgument", err)
	}
	if _, err := timm.CreateModel("bogus-scheme:x", true); !errors.Is(err, timm.ErrInvalidArgument) {
		t.Errorf("bad spec: %v, want ErrInvalidArgument", err)
	}

	m := mustCreate(t, resnet(t).spec(t))
	// The library rejects a shape of the right length that the model cannot take.
	if _, err := m.Infer(make([]float32, 4*160*160), []int64{1, 4, 160, 160}); !errors.Is(err, timm.ErrInvalidArgument) {
		t.Errorf("4 channels: %v, want ErrInvalidArgument", err)
	}
	// The binding rejects lengths that disagree with the shape before C could over-read.
	if _, err := m.Infer(make([]float32, 10), []int64{1, 3, 160, 160}); !errors.Is(err, timm.ErrInvalidArgument) {
		t.Errorf("short input: %v, want ErrInvalidArgument", err)
	}
	for _, shape := range [][]int64{nil, {1, -3, 160, 160}, {1 << 40, 1 << 40, 3, 3}} {
		if _, err := m.Infer(nil, shape); !errors.Is(err, timm.ErrInvalidArgument) {
			t.Errorf("shape %v: %v, want ErrInvalidArgument", shape, err)
		}
	}
	r := resnet(t).reference(t)
	if err := m.InferInto(r.input, r.inputShape, make([]float32, m.OutputDim())); !errors.Is(err, timm.ErrBufferTooSmall) {
		t.Errorf("small buffer: %v, want ErrBufferTooSmall", err)
	}
}

func TestOptionsReachTheLibrary(t *testing.T) {
	f := resnet(t)
	r := f.reference(t)
	mustCreate(t, f.spec(t)) // ONNX Runtime is now loaded for the process
	// Another runtime is refused once one is loaded; without the option the same spec loads.
	_, err := timm.CreateModel(f.spec(t), true, timm.WithORTLibrary(filepath.Join(t.TempDir(), "libonnxruntime.so")))
	if !errors.Is(err, timm.ErrInvalidArgument) {
		t.Fatalf("other ort_library: %v, want ErrInvalidArgument", err)
	}
	m := mustCreate(t, f.spec(t), timm.WithGraph(timm.GraphONNX), timm.WithGraphOptimizationLevel(timm.GraphOptimizationLevelBasic),
		timm.WithWeightsMemory(timm.WeightsMemoryCopy), timm.WithProviders(timm.ProviderCPU),
		timm.WithThreads(1), timm.WithInterOpThreads(1), timm.WithProgress(func(done, total uint64) {
			t.Errorf("progress called for a local folder (%d/%d)", done, total)
		}))
	out, err := m.Infer(r.input, r.inputShape)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(t, out, r.logits); d > tolerance {
		t.Fatalf("logits differ from timm by %g", d)
	}
}

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	f := resnet(t)
	r := f.reference(t)
	m, err := timm.CreateModel(f.spec(t), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.Infer(r.input, r.inputShape); !errors.Is(err, timm.ErrClosed) {
		t.Errorf("Infer after Close: %v, want ErrClosed", err)
	}
	if err := m.InferInto(r.input, r.inputShape, make([]float32, 20)); !errors.Is(err, timm.ErrClosed) {
		t.Errorf("InferInto after Close: %v, want ErrClosed", err)
	}
	if _, err := m.ConfigJSON(); !errors.Is(err, timm.ErrClosed) {
		t.Errorf("ConfigJSON after Close: %v, want ErrClosed", err)
	}
	if _, ok := m.Label(0); ok {
		t.Error("Label after Close reports a label")
	}
}

// Close racing with Infer from many goroutines: every Infer either completes correctly or
// returns ErrClosed, Close waits for the ones in flight, and nothing crashes.
func TestCloseWhileInferring(t *testing.T) {
	f := resnet(t)
	r := f.reference(t)
	m, err := timm.CreateModel(f.spec(t), true)
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Infer(r.input, r.inputShape)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var once sync.Once
	var completed, refused atomic.Int64
	inferring := make(chan struct{}) // closed once an Infer has completed: Close then races the rest
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				out, err := m.Infer(r.input, r.inputShape)
				if errors.Is(err, timm.ErrClosed) {
					refused.Add(1)
					return
				}
				if err != nil || maxAbsDiff(t, out, want) != 0 {
					if err == nil {
						err = errors.New("result changed while closing")
					}
					errs <- err
					once.Do(func() { close(inferring) }) // never leave the closers waiting
					return
				}
				completed.Add(1)
				once.Do(func() { close(inferring) })
			}
		}()
	}
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-inferring
			if err := m.Close(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d infers completed, %d refused with ErrClosed", completed.Load(), refused.Load())
	if _, err := m.Infer(r.input, r.inputShape); !errors.Is(err, timm.ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}

// featureMapRef is one features_only reference of a fixture's meta.json.
type featureMapRef struct {
	Kwargs  map[string]any `json:"kwargs"`
	Input   *string        `json:"input"`
	Outputs []struct {
		File  string  `json:"file"`
		Shape []int64 `json:"shape"`
	} `json:"outputs"`
	FeatureInfo []struct {
		NumChs    int    `json:"num_chs"`
		Reduction int    `json:"reduction"`
		Module    string `json:"module"`
	} `json:"feature_info"`
}

func TestInferOutputsMatchesTimmFeaturesOnly(t *testing.T) {
	var index struct {
		Fixtures []fixture `json:"fixtures"`
	}
	data, err := os.ReadFile(filepath.Join(fixturesDir(t), "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &index); err != nil {
		t.Fatal(err)
	}
	var f fixture
	for _, c := range index.Fixtures {
		if c.Name == "convnext_atto-small" {
			f = c
		}
	}
	if f.Name == "" {
		t.Fatal("no convnext_atto-small fixture")
	}
	dir := filepath.Join(fixturesDir(t), f.Reference)
	var meta struct {
		FeatureMaps []featureMapRef `json:"feature_maps"`
	}
	data, err = os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		t.Fatal(err)
	}
	// The first reference: timm's default out_indices on the fixture's own input.
	want := meta.FeatureMaps[0]
	if len(want.Kwargs) != 0 || want.Input != nil {
		t.Fatalf("the first reference should use the defaults: %+v", want.Kwargs)
	}
	r := f.reference(t)
	m := mustCreate(t, f.spec(t), timm.WithOutput(timm.OutputFeatureMaps))
	if got := m.OutputCount(); got != len(want.Outputs) {
		t.Fatalf("OutputCount = %d, want %d", got, len(want.Outputs))
	}
	info, err := m.FeatureInfo()
	if err != nil {
		t.Fatal(err)
	}
	for i, fi := range info {
		w := want.FeatureInfo[i]
		if fi.Channels != w.NumChs || fi.Reduction != w.Reduction || fi.Module != w.Module {
			t.Errorf("feature_info[%d] = %+v, timm's %+v", i, fi, w)
		}
	}
	maps, err := m.InferOutputs(r.input, r.inputShape)
	if err != nil {
		t.Fatal(err)
	}
	for i, got := range maps {
		ref := readF32(t, filepath.Join(dir, want.Outputs[i].File))
		if fmt.Sprint(got.Shape) != fmt.Sprint(want.Outputs[i].Shape) {
			t.Errorf("map %d shape %v, timm's %v", i, got.Shape, want.Outputs[i].Shape)
			continue
		}
		scale := 1e-12
		for _, v := range ref {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		if d := maxAbsDiff(t, got.Data, ref) / scale; d > 1e-4 {
			t.Errorf("map %d differs from timm by %g (relative)", i, d)
		}
	}
	// Infer refuses a model with several outputs and names InferOutputs' C call.
	if _, err := m.Infer(r.input, r.inputShape); !errors.Is(err, timm.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "timm_infer_outputs") {
		t.Errorf("Infer on a feature-map model: %v", err)
	}
}
