package timm_test

import (
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	timm "github.com/libtimm/timm/bindings/go"
)

// timm's probabilities are float32 softmax from PyTorch; ours come from ONNX Runtime.
const probabilityTolerance = 1e-3

// demoDir is the demo model folder (scripts/fetch-demo-model); TIMM_DEMO_MODEL_DIR overrides it.
func demoDir(t testing.TB) string {
	d := os.Getenv("TIMM_DEMO_MODEL_DIR")
	if d == "" {
		d = filepath.Join("..", "..", ".models", "tf_efficientnet_lite0.in1k")
	}
	d, err := filepath.Abs(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d, "config.json")); err != nil {
		t.Fatalf("the demo model %s is missing: run scripts/fetch-demo-model (scripts/test does): %v", d, err)
	}
	return d
}

var (
	demoOnce  sync.Once
	demoModel *timm.Model
	demoErr   error
)

// demo is the demo model, loaded once for all tests (never closed: the process ends).
func demo(t testing.TB) *timm.Model {
	dir := demoDir(t)
	demoOnce.Do(func() { demoModel, demoErr = timm.CreateModel("local:"+dir, true) })
	if demoErr != nil {
		t.Fatal(demoErr)
	}
	return demoModel
}

type demoReference struct {
	Image string `json:"image"`
	Top5  []struct {
		Index            int     `json:"index"`
		LabelName        string  `json:"label_name"`
		LabelDescription string  `json:"label_description"`
		Probability      float64 `json:"probability"`
	} `json:"top5"`
}

func demoTop5(t testing.TB) demoReference {
	data, err := os.ReadFile(filepath.Join(fixturesDir(t), "reference", "demo_tf_efficientnet_lite0", "top5.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r demoReference
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Top5) != 5 {
		t.Fatalf("top5.json has %d entries", len(r.Top5))
	}
	return r
}

func demoImage(t testing.TB) string { return filepath.Join(fixturesDir(t), demoTop5(t).Image) }

// readRGBA decodes a PNG with Go's decoder (opaque RGB PNGs come back as *image.RGBA).
func readRGBA(t testing.TB, path string) *image.RGBA {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	rgba, ok := img.(*image.RGBA)
	if !ok {
		t.Fatalf("%s decodes to %T, want *image.RGBA", path, img)
	}
	return rgba
}

// pack rewrites an opaque RGBA picture into format with pad spare bytes per row (filled with
// 0xAB, which the library must ignore). The slice ends right after the last row's pixels, as
// the Image contract allows.
func pack(src *image.RGBA, format timm.PixelFormat, pad int) timm.Image {
	w, h := src.Rect.Dx(), src.Rect.Dy()
	bpp := format.BytesPerPixel()
	stride := w*bpp + pad
	data := make([]byte, stride*(h-1)+w*bpp)
	for i := range data {
		data[i] = 0xAB
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			s := src.Pix[y*src.Stride+x*4:]
			d := data[y*stride+x*bpp:]
			switch format {
			case timm.PixelRGB8:
				copy(d, []byte{s[0], s[1], s[2]})
			case timm.PixelBGR8:
				copy(d, []byte{s[2], s[1], s[0]})
			case timm.PixelRGBA8:
				copy(d, []byte{s[0], s[1], s[2], byte(x*7 + y*13)}) // alpha is dropped, not blended
			case timm.PixelBGRA8:
				copy(d, []byte{s[2], s[1], s[0], byte(x*7 + y*13)})
			case timm.PixelGray8:
				d[0] = s[1]
			}
		}
	}
	return timm.Image{Data: data, Width: w, Height: h, Stride: stride, Format: format}
}

func sameClasses(t *testing.T, what string, got, want []timm.Class, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d classes, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Index != w.Index || g.Label != w.Label || g.Description != w.Description ||
			math.Abs(float64(g.Probability-w.Probability)) > tol || math.Abs(float64(g.Logit-w.Logit)) > 10*tol {
			t.Errorf("%s: rank %d is %+v, want %+v", what, i, g, w)
		}
	}
}

func TestClassifyFileMatchesTimmTop5(t *testing.T) {
	m := demo(t)
	ref := demoTop5(t)
	top, err := m.ClassifyFile(demoImage(t), 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(top) != 5 {
		t.Fatalf("%d classes, want 5", len(top))
	}
	for i, want := range ref.Top5 {
		got := top[i]
		if got.Index != want.Index || got.Label != want.LabelName || got.Description != want.LabelDescription {
			t.Errorf("rank %d: %+v, want index %d %q %q", i, got, want.Index, want.LabelName, want.LabelDescription)
		}
		if d := math.Abs(float64(got.Probability) - want.Probability); d > probabilityTolerance {
			t.Errorf("rank %d: probability %g, timm %g (|diff| %g)", i, got.Probability, want.Probability, d)
		}
		if l, _ := m.Label(got.Index); l != got.Label {
			t.Errorf("rank %d: label %q, Label() %q", i, got.Label, l)
		}
		if i > 0 && got.Probability > top[i-1].Probability {
			t.Errorf("rank %d is more probable than rank %d", i, i-1)
		}
	}
}

func TestBGRBufferEqualsRGBAndTheFile(t *testing.T) {
	m := demo(t)
	src := readRGBA(t, demoImage(t))
	fromFile, err := m.ClassifyFile(demoImage(t), 5)
	if err != nil {
		t.Fatal(err)
	}
	rgb, bgr := pack(src, timm.PixelRGB8, 5), pack(src, timm.PixelBGR8, 0)
	bgr.Stride = 0 // packed
	// Go's own *image.RGBA, passed as it is.
	rgba := timm.Image{Data: src.Pix, Width: src.Rect.Dx(), Height: src.Rect.Dy(), Stride: src.Stride, Format: timm.PixelRGBA8}
	got, err := m.Classify([]timm.Image{rgb}, 5)
	if err != nil {
		t.Fatal(err)
	}
	// The same pixels through the same transform and graph: identical results.
	sameClasses(t, "RGB buffer vs file", got[0], fromFile, 0)
	for _, img := range []timm.Image{bgr, rgba} {
		got, err := m.Classify([]timm.Image{img}, 5)
		if err != nil {
			t.Fatal(err)
		}
		sameClasses(t, img.Format.String()+" buffer vs RGB", got[0], fromFile, 0)
	}
	if fromFile[0].Description != "tiger cat" {
		t.Errorf("top class %+v, want tiger cat", fromFile[0])
	}
	// Reading the BGR bytes as RGB must change the input: the format reaches the library.
	asRGB := bgr
	asRGB.Format = timm.PixelRGB8
	a, errA := m.Preprocess(asRGB)
	b, errB := m.Preprocess(bgr)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if reflect.DeepEqual(a, b) {
		t.Error("swapped channels preprocess to the same tensor")
	}
}

func TestPreprocessFormatsAndLength(t *testing.T) {
	m := demo(t)
	src := readRGBA(t, demoImage(t))
	want, err := m.Preprocess(pack(src, timm.PixelRGB8, 0))
	if err != nil {
		t.Fatal(err)
	}
	chw := m.DataInputSize()
	if chw != m.InputSize() || chw != [3]int64{3, 224, 224} {
		t.Errorf("DataInputSize() = %v, InputSize() = %v, want [3 224 224]", chw, m.InputSize())
	}
	if int64(len(want)) != chw[0]*chw[1]*chw[2] {
		t.Fatalf("Preprocess gave %d floats, want C*H*W = %d", len(want), chw[0]*chw[1]*chw[2])
	}
	for _, f := range []timm.PixelFormat{timm.PixelBGR8, timm.PixelRGBA8, timm.PixelBGRA8} {
		got, err := m.Preprocess(pack(src, f, 3))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v differs from RGB8", f)
		}
	}
	// Gray is replicated to RGB: equal to an RGB picture whose channels are the gray value.
	gray := pack(src, timm.PixelGray8, 1)
	grayRGB := image.NewRGBA(src.Rect)
	for y := 0; y < gray.Height; y++ {
		for x := 0; x < gray.Width; x++ {
			v := gray.Data[y*gray.Stride+x]
			copy(grayRGB.Pix[y*grayRGB.Stride+x*4:], []byte{v, v, v, 255})
		}
	}
	g1, err1 := m.Preprocess(gray)
	g2, err2 := m.Preprocess(pack(grayRGB, timm.PixelRGB8, 0))
	if err1 != nil || err2 != nil || !reflect.DeepEqual(g1, g2) {
		t.Errorf("Gray8 differs from replicated RGB8 (%v, %v)", err1, err2)
	}

	// PreprocessInto: a larger buffer is fine (the tail is untouched), a smaller one is not.
	out := make([]float32, len(want)+2)
	out[len(want)] = -7
	if err := m.PreprocessInto(pack(src, timm.PixelRGB8, 0), out); err != nil || !reflect.DeepEqual(out[:len(want)], want) || out[len(want)] != -7 {
		t.Errorf("PreprocessInto: %v", err)
	}
	for _, n := range []int{len(want) - 1, 0} {
		if err := m.PreprocessInto(pack(src, timm.PixelRGB8, 0), make([]float32, n)); !errors.Is(err, timm.ErrBufferTooSmall) {
			t.Errorf("PreprocessInto with %d floats: %v, want ErrBufferTooSmall", n, err)
		}
	}

	// Preprocess + Infer is what Classify does.
	logits, err := m.Infer(want, []int64{1, chw[0], chw[1], chw[2]})
	if err != nil {
		t.Fatal(err)
	}
	top, err := m.Classify([]timm.Image{pack(src, timm.PixelRGB8, 0)}, 1)
	if err != nil {
		t.Fatal(err)
	}
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	if top[0][0].Index != best || math.Abs(float64(top[0][0].Logit-logits[best])) > 1e-4 {
		t.Errorf("Classify %+v, Preprocess+Infer argmax %d (logit %g)", top[0][0], best, logits[best])
	}
}

func TestClassifyBatch(t *testing.T) {
	m := demo(t)
	cat := pack(readRGBA(t, demoImage(t)), timm.PixelRGB8, 0)
	coffee := pack(readRGBA(t, filepath.Join(fixturesDir(t), "images", "coffee.png")), timm.PixelBGR8, 2)
	// The same picture twice: its Data is pinned twice during the call.
	batch := []timm.Image{cat, coffee, cat}
	got, err := m.Classify(batch, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d results for 3 images", len(got))
	}
	for i, img := range batch {
		one, err := m.Classify([]timm.Image{img}, 3)
		if err != nil {
			t.Fatal(err)
		}
		// Batched and single runs may differ in the last bits (other kernels).
		sameClasses(t, "batch vs single", got[i], one[0], 1e-5)
	}
	if got[0][0].Index == got[1][0].Index {
		t.Errorf("a cat and a coffee cup got the same top class %+v", got[0][0])
	}
	if empty, err := m.Classify(nil, 3); err != nil || len(empty) != 0 {
		t.Errorf("empty batch: %v, %v", empty, err)
	}
}

func TestTestSizeAndMissingLabels(t *testing.T) {
	// resnet18-tiny: 4 classes, no label names, input_size 32 but test_input_size 288.
	spec := "local:" + filepath.Join(fixturesDir(t), "models", "resnet18-tiny")
	plain := mustCreate(t, spec, timm.WithThreads(1))
	testSize := mustCreate(t, spec, timm.WithThreads(1), timm.WithUseTestSize(true))
	if plain.DataInputSize() != [3]int64{3, 32, 32} || testSize.DataInputSize() != [3]int64{3, 288, 288} ||
		testSize.InputSize() != [3]int64{3, 288, 288} {
		t.Errorf("DataInputSize %v / %v (test size), InputSize %v", plain.DataInputSize(), testSize.DataInputSize(), testSize.InputSize())
	}
	img := pack(readRGBA(t, demoImage(t)), timm.PixelRGB8, 0)
	for m, n := range map[*timm.Model]int{plain: 3 * 32 * 32, testSize: 3 * 288 * 288} {
		if out, err := m.Preprocess(img); err != nil || len(out) != n {
			t.Errorf("Preprocess: %d floats (%v), want %d", len(out), err, n)
		}
	}

	// k = NumClasses ranks every class; the probabilities are a softmax and sum to 1.
	all, err := plain.Classify([]timm.Image{img}, plain.NumClasses())
	if err != nil {
		t.Fatal(err)
	}
	sum, seen := float32(0), map[int]bool{}
	for _, c := range all[0] {
		sum += c.Probability
		seen[c.Index] = true
		if c.Label != "" || c.Description != "" {
			t.Errorf("%+v has a label, but the config has none", c)
		}
	}
	if len(seen) != 4 || math.Abs(float64(sum)-1) > 1e-5 {
		t.Errorf("classes %v, probabilities sum to %g", all[0], sum)
	}
}

func TestImageValidation(t *testing.T) {
	m := demo(t)
	ok := timm.Image{Data: make([]byte, 4*10*3), Width: 4, Height: 10, Format: timm.PixelRGB8}
	if _, err := m.Preprocess(ok); err != nil {
		t.Fatalf("a valid 4x10 image: %v", err)
	}
	// With stride 20, rows start 20 bytes apart but the last needs only its 12 pixel bytes.
	exact := timm.Image{Data: make([]byte, 20*9+12), Width: 4, Height: 10, Stride: 20, Format: timm.PixelRGB8}
	if _, err := m.Preprocess(exact); err != nil {
		t.Fatalf("stride*(h-1)+w*bpp bytes: %v", err)
	}
	short := exact
	short.Data = exact.Data[:len(exact.Data)-1]
	bad := map[string]timm.Image{
		"short slice":        short,
		"short packed slice": {Data: make([]byte, 4*10*3-1), Width: 4, Height: 10, Format: timm.PixelRGB8},
		"short RGBA slice":   {Data: make([]byte, 4*10*3), Width: 4, Height: 10, Format: timm.PixelRGBA8},
		"nil data":           {Width: 4, Height: 10, Format: timm.PixelGray8},
		"stride < row":       {Data: make([]byte, 1000), Width: 4, Height: 10, Stride: 11, Format: timm.PixelRGB8},
		"negative stride":    {Data: make([]byte, 1000), Width: 4, Height: 10, Stride: -12, Format: timm.PixelRGB8},
		"zero width":         {Data: make([]byte, 1000), Width: 0, Height: 10, Format: timm.PixelRGB8},
		"negative height":    {Data: make([]byte, 1000), Width: 4, Height: -1, Format: timm.PixelRGB8},
		"width > MaxUint32":  {Data: make([]byte, 1000), Width: math.MaxUint32 + 1, Height: 1, Format: timm.PixelGray8},
		"huge stride":        {Data: make([]byte, 1000), Width: 4, Height: 1 << 20, Stride: math.MaxInt / 2, Format: timm.PixelRGB8},
		"bad format":         {Data: make([]byte, 1000), Width: 4, Height: 10, Format: timm.PixelFormat(99)},
	}
	for name, img := range bad {
		if _, err := m.Preprocess(img); !errors.Is(err, timm.ErrInvalidArgument) {
			t.Errorf("%s: Preprocess gave %v, want ErrInvalidArgument", name, err)
		}
		// One bad image refuses the whole batch.
		if _, err := m.Classify([]timm.Image{ok, img}, 1); !errors.Is(err, timm.ErrInvalidArgument) || !strings.Contains(err.Error(), "images[1]") {
			t.Errorf("%s: Classify gave %v, want ErrInvalidArgument naming images[1]", name, err)
		}
	}
}

func TestClassifyErrors(t *testing.T) {
	m := demo(t)
	img := timm.Image{Data: make([]byte, 8*8), Width: 8, Height: 8, Format: timm.PixelGray8}
	for _, k := range []int{0, -1, m.NumClasses() + 1} {
		if _, err := m.Classify([]timm.Image{img}, k); !errors.Is(err, timm.ErrInvalidArgument) {
			t.Errorf("Classify k=%d: %v, want ErrInvalidArgument", k, err)
		}
		if _, err := m.ClassifyFile(demoImage(t), k); !errors.Is(err, timm.ErrInvalidArgument) {
			t.Errorf("ClassifyFile k=%d: %v, want ErrInvalidArgument", k, err)
		}
	}
	if _, err := m.ClassifyFile(filepath.Join(fixturesDir(t), "images", "no_such_image.png"), 5); !errors.Is(err, timm.ErrNotFound) {
		t.Errorf("missing file: %v, want ErrNotFound", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.png")
	if err := os.WriteFile(junk, []byte("this is not an image"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ClassifyFile(junk, 5); !errors.Is(err, timm.ErrInvalidArgument) {
		t.Errorf("undecodable file: %v, want ErrInvalidArgument", err)
	}
	if _, err := m.ClassifyFile(demoImage(t)+"\x00.x", 5); !errors.Is(err, timm.ErrInvalidArgument) {
		t.Errorf("path with NUL: %v, want ErrInvalidArgument", err)
	}
}

func TestImageCallsAfterClose(t *testing.T) {
	m, err := timm.CreateModel("local:"+filepath.Join(fixturesDir(t), "models", "resnet18-tiny"), true)
	if err != nil {
		t.Fatal(err)
	}
	img := timm.Image{Data: make([]byte, 8*8*3), Width: 8, Height: 8, Format: timm.PixelRGB8}
	if _, err := m.Classify([]timm.Image{img}, 1); err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
	if _, err := m.Preprocess(img); !errors.Is(err, timm.ErrClosed) {
		t.Errorf("Preprocess after Close: %v", err)
	}
	if _, err := m.Classify([]timm.Image{img}, 1); !errors.Is(err, timm.ErrClosed) {
		t.Errorf("Classify after Close: %v", err)
	}
	if _, err := m.ClassifyFile(demoImage(t), 1); !errors.Is(err, timm.ErrClosed) {
		t.Errorf("ClassifyFile after Close: %v", err)
	}
}

// Many goroutines classify on one model (equal results), then Close races the rest: each
// call completes correctly or returns ErrClosed.
func TestConcurrentClassifyAndClose(t *testing.T) {
	spec := "local:" + filepath.Join(fixturesDir(t), "models", "resnet18-tiny")
	m, err := timm.CreateModel(spec, true)
	if err != nil {
		t.Fatal(err)
	}
	img := pack(readRGBA(t, demoImage(t)), timm.PixelBGR8, 3)
	want, err := m.Classify([]timm.Image{img, img}, 4)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var once sync.Once
	var completed, refused atomic.Int64
	started := make(chan struct{})
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				got, err := m.Classify([]timm.Image{img, img}, 4)
				once.Do(func() { close(started) })
				if errors.Is(err, timm.ErrClosed) {
					refused.Add(1)
					return
				}
				if err != nil {
					errs <- err
					return
				}
				if !reflect.DeepEqual(got, want) {
					errs <- errors.New("concurrent result differs from the sequential one")
					return
				}
				completed.Add(1)
			}
		}()
	}
	<-started
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d classifications completed, %d refused with ErrClosed", completed.Load(), refused.Load())
}
