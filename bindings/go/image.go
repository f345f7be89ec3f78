package timm

/*
#include <stdlib.h>
#include <timm.h>
*/
import "C"

import (
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"
	"unsafe"
)

// PixelFormat is how the bytes of an Image are laid out (TimmPixelFormat in timm.h).
type PixelFormat int

// The pixel formats of timm.h.
const (
	PixelRGB8  PixelFormat = C.TIMM_PIXEL_RGB8  // 3 bytes per pixel, red first
	PixelBGR8  PixelFormat = C.TIMM_PIXEL_BGR8  // 3 bytes per pixel, blue first (OpenCV's default)
	PixelRGBA8 PixelFormat = C.TIMM_PIXEL_RGBA8 // 4 bytes per pixel; alpha is dropped, not blended
	PixelBGRA8 PixelFormat = C.TIMM_PIXEL_BGRA8 // 4 bytes per pixel, blue first
	PixelGray8 PixelFormat = C.TIMM_PIXEL_GRAY8 // 1 byte per pixel, replicated to RGB
)

// BytesPerPixel is 3, 4 or 1; 0 for a value that is not a PixelFormat.
func (f PixelFormat) BytesPerPixel() int {
	switch f {
	case PixelRGB8, PixelBGR8:
		return 3
	case PixelRGBA8, PixelBGRA8:
		return 4
	case PixelGray8:
		return 1
	}
	return 0
}

func (f PixelFormat) String() string {
	switch f {
	case PixelRGB8:
		return "RGB8"
	case PixelBGR8:
		return "BGR8"
	case PixelRGBA8:
		return "RGBA8"
	case PixelBGRA8:
		return "BGRA8"
	case PixelGray8:
		return "Gray8"
	}
	return "PixelFormat(" + strconv.Itoa(int(f)) + ")"
}

// Image is pixels the caller owns: Height rows of Stride bytes (0 = Width*BytesPerPixel),
// each starting with Width pixels in Format. Data must hold at least
// Stride*(Height-1) + Width*BytesPerPixel bytes. The library reads it during the call only.
//
// A Go *image.RGBA or *image.NRGBA of an opaque picture is
// Image{Data: m.Pix, Width: w, Height: h, Stride: m.Stride, Format: PixelRGBA8}.
type Image struct {
	Data          []byte
	Width, Height int
	Stride        int
	Format        PixelFormat
}

// check validates img before C sees it: C cannot see the slice's length, so a slice too short
// for the stated size must be refused here rather than read past.
func (img Image) check(what string) error {
	bpp := img.Format.BytesPerPixel()
	if bpp == 0 {
		return invalidArgument(fmt.Sprintf("%s: pixel format %d is not a PixelFormat", what, int(img.Format)))
	}
	if img.Width <= 0 || img.Height <= 0 || int64(img.Width) > math.MaxUint32 || int64(img.Height) > math.MaxUint32 {
		return invalidArgument(fmt.Sprintf("%s: size %dx%d is not in 1..=%d", what, img.Width, img.Height, uint32(math.MaxUint32)))
	}
	row := img.Width * bpp // at most 4 * MaxUint32: no overflow in a 64-bit int
	stride := img.Stride
	if stride == 0 {
		stride = row
	}
	if stride < row {
		return invalidArgument(fmt.Sprintf("%s: stride %d is less than width %d x %d bytes = %d", what, img.Stride, img.Width, bpp, row))
	}
	if stride > (math.MaxInt-row)/(img.Height) {
		return invalidArgument(fmt.Sprintf("%s: stride %d x height %d overflows", what, stride, img.Height))
	}
	if need := stride*(img.Height-1) + row; len(img.Data) < need {
		return invalidArgument(fmt.Sprintf("%s: Data has %d bytes; %dx%d %s with stride %d needs %d",
			what, len(img.Data), img.Width, img.Height, img.Format, stride, need))
	}
	return nil
}

// cImage is img as a TimmImage pointing into img.Data, which pin keeps in place: the
// TimmImage lives in Go memory passed to C, and Go memory passed to C may only hold pinned
// Go pointers. img must have passed check (so Data is not empty).
func cImage(img Image, pin *runtime.Pinner) C.TimmImage {
	pin.Pin(&img.Data[0])
	return C.TimmImage{
		data:   (*C.uint8_t)(unsafe.Pointer(&img.Data[0])),
		width:  C.uint32_t(img.Width),
		height: C.uint32_t(img.Height),
		stride: C.size_t(img.Stride),
		format: uint32(img.Format), // cgo gives enum fields their underlying type
	}
}

// Class is one of an image's top classes.
type Class struct {
	Index       int
	Probability float32 // softmax of the logits
	Logit       float32
	Label       string // e.g. "n02123159"; empty when the config has no label names
	Description string // e.g. "tiger cat"; empty when the config has none
}

// goClass copies a TimmClass; its strings belong to the model, so the caller must hold the
// model's read lock.
func goClass(c *C.TimmClass) Class {
	return Class{
		Index:       int(c.index),
		Probability: float32(c.probability),
		Logit:       float32(c.logit),
		Label:       C.GoString(c.label), // "" for NULL
		Description: C.GoString(c.description),
	}
}

// DataInputSize is the {C, H, W} that Preprocess produces. It equals InputSize (the config's
// input_size, or its test_input_size for a model created with WithUseTestSize(true)).
func (m *Model) DataInputSize() [3]int64 { return m.dataInputSize }

// checkK bounds k before a results slice of len(images)*k is made.
func (m *Model) checkK(k int) error {
	if k < 1 || k > m.numClasses {
		return invalidArgument(fmt.Sprintf("k = %d; expected 1..=%d (NumClasses)", k, m.numClasses))
	}
	return nil
}

// Preprocess applies timm's eval transform (resize, center crop, normalize) to img and
// returns the C*H*W floats (CHW order) of DataInputSize, ready for Infer with {1, C, H, W}.
func (m *Model) Preprocess(img Image) ([]float32, error) {
	chw := m.dataInputSize
	out := make([]float32, chw[0]*chw[1]*chw[2])
	if err := m.PreprocessInto(img, out); err != nil {
		return nil, err
	}
	return out, nil
}

// PreprocessInto is Preprocess writing into out, which must hold at least C*H*W floats.
func (m *Model) PreprocessInto(img Image, out []float32) error {
	if err := img.check("image"); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return ErrClosed
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	ci := cImage(img, &pin)
	// An empty out still gets a valid pointer, so the library reports BUFFER_TOO_SMALL
	// rather than a NULL output.
	var none C.float
	o := &none
	if len(out) > 0 {
		o = (*C.float)(unsafe.Pointer(&out[0]))
	}
	err := call(func() Status { return Status(C.timm_preprocess(m.h, &ci, o, C.size_t(len(out)))) })
	runtime.KeepAlive(out)
	return err
}

// Classify runs images as one batch (one inference) and returns, for each image, its k most
// probable classes, most probable first. k must be in 1..=NumClasses(). An empty batch
// returns an empty result.
func (m *Model) Classify(images []Image, k int) ([][]Class, error) {
	if err := m.checkK(k); err != nil {
		return nil, err
	}
	for i, img := range images {
		if err := img.check(fmt.Sprintf("images[%d]", i)); err != nil {
			return nil, err
		}
	}
	if len(images) == 0 {
		return [][]Class{}, nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return nil, ErrClosed
	}
	var pin runtime.Pinner
	defer pin.Unpin()
	cimgs := make([]C.TimmImage, len(images))
	for i, img := range images {
		cimgs[i] = cImage(img, &pin)
	}
	raw := make([]C.TimmClass, len(images)*k)
	if err := call(func() Status {
		return Status(C.timm_classify(m.h, &cimgs[0], C.size_t(len(images)), C.size_t(k), &raw[0]))
	}); err != nil {
		return nil, err
	}
	out := make([][]Class, len(images))
	for i := range out {
		out[i] = make([]Class, k)
		for j := range out[i] {
			out[i][j] = goClass(&raw[i*k+j])
		}
	}
	return out, nil
}

// ClassifyFile decodes an image file (JPEG, PNG or WebP) and returns its k most probable
// classes. A missing file is ErrNotFound, one that does not decode ErrInvalidArgument.
func (m *Model) ClassifyFile(path string, k int) ([]Class, error) {
	if err := m.checkK(k); err != nil {
		return nil, err
	}
	// C strings end at the first NUL: refuse a path that would name another file.
	if strings.IndexByte(path, 0) >= 0 {
		return nil, invalidArgument("the image path contains a NUL byte")
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.h == nil {
		return nil, ErrClosed
	}
	raw := make([]C.TimmClass, k)
	if err := call(func() Status { return Status(C.timm_classify_file(m.h, cpath, C.size_t(k), &raw[0])) }); err != nil {
		return nil, err
	}
	out := make([]Class, k)
	for i := range out {
		out[i] = goClass(&raw[i])
	}
	return out, nil
}
