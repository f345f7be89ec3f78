// libtimm C++ API: a header-only C++17 wrapper over timm.h.
//
//   timm::Model model("local:/models/resnet50.a1_in1k");
//   for (const timm::Class& c : model.classify_file("cat.jpg", 5))
//     std::cout << c.description.value_or("?") << " " << c.probability << "\n";
//   std::vector<float> logits = model.infer(pixels, {1, 3, 224, 224});   // preprocessed input
//
// Failures throw timm::Error, which carries the C status and the library's message.
// A timm::Model is move-only and may be used from many threads at once (infer, preprocess,
// classify and the accessors are const and thread-safe, as in the C API); it must not be moved
// from or destroyed while another thread uses it.
#ifndef TIMM_HPP
#define TIMM_HPP

#include <timm.h>

#include "options.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace timm {

// A failed call: status() is the C status, what() the library's "STATUS_NAME: message".
class Error : public std::runtime_error {
 public:
  Error(TimmStatus status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  TimmStatus status() const noexcept { return status_; }
  // e.g. "TIMM_ERR_NOT_FOUND".
  const char* status_name() const noexcept { return timm_status_name(static_cast<int32_t>(status_)); }

 private:
  TimmStatus status_;
};

// The library version, e.g. "0.1.0".
inline std::string version() { return timm_version(); }

namespace detail {

// timm_last_error() is per thread; called right after the failing call on the same thread.
inline std::string last_error() {
  const char* msg = timm_last_error();
  return msg ? std::string(msg) : std::string();
}

[[noreturn]] inline void throw_last(TimmStatus status) {
  std::string msg = last_error();
  if (msg.empty()) msg = timm_status_name(static_cast<int32_t>(status));
  throw Error(status, msg);
}

inline void check(TimmStatus status) {
  if (status != TIMM_OK) throw_last(status);
}

[[noreturn]] inline void invalid_argument(const std::string& what) {
  throw Error(TIMM_ERR_INVALID_ARGUMENT, std::string("TIMM_ERR_INVALID_ARGUMENT: ") + what);
}

// Product of the dimensions, or nullopt when one is negative or the product overflows.
inline std::optional<size_t> element_count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    const auto ud = static_cast<size_t>(d);
    if (ud != 0 && n > std::numeric_limits<size_t>::max() / ud) return std::nullopt;
    n *= ud;
  }
  return n;
}

inline std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// C strings end at the first NUL: refuse strings that would be silently cut short.
inline const char* c_str(const std::string& s, const char* what) {
  if (s.find('\0') != std::string::npos) invalid_argument(std::string(what) + " contains a NUL byte");
  return s.c_str();
}

inline std::optional<std::string> optional_string(const char* s) {
  if (!s) return std::nullopt;
  return std::string(s);
}

// The {C, H, W} the model takes and timm_preprocess writes (the test size with
// use_test_size). Never throws; {0, 0, 0} for a NULL model.
inline std::array<int64_t, 3> model_input_size(const TimmModel* model) noexcept {
  std::array<int64_t, 3> chw{};
  if (!model || timm_model_input_size(model, chw.data()) != TIMM_OK) chw = {};
  return chw;
}

}  // namespace detail

// How the bytes of an ImageView are laid out (TimmPixelFormat).
enum class PixelFormat : int {
  RGB8 = TIMM_PIXEL_RGB8,    // 3 bytes per pixel, red first
  BGR8 = TIMM_PIXEL_BGR8,    // 3 bytes per pixel, blue first (OpenCV's cv::Mat default)
  RGBA8 = TIMM_PIXEL_RGBA8,  // 4 bytes per pixel; alpha is dropped, not blended
  BGRA8 = TIMM_PIXEL_BGRA8,
  GRAY8 = TIMM_PIXEL_GRAY8,  // 1 byte per pixel, replicated to RGB
};

// Bytes per pixel of `format` (0 for a value that is not a PixelFormat).
constexpr size_t bytes_per_pixel(PixelFormat format) noexcept {
  switch (format) {
    case PixelFormat::RGB8:
    case PixelFormat::BGR8: return 3;
    case PixelFormat::RGBA8:
    case PixelFormat::BGRA8: return 4;
    case PixelFormat::GRAY8: return 1;
  }
  return 0;
}

// Pixels the caller owns (nothing is copied or kept): `height` rows of `stride` bytes, each
// starting with `width` pixels in `format`. `data` must cover stride * (height - 1) +
// width * bytes_per_pixel(format) bytes; the library reads them during the call only.
//
//   timm::ImageView{rgb.data(), w, h}                        // packed RGB
//   timm::ImageView::bgr(mat.data, mat.cols, mat.rows, mat.step)   // an OpenCV CV_8UC3 cv::Mat
struct ImageView {
  const uint8_t* data = nullptr;
  uint32_t width = 0;
  uint32_t height = 0;
  size_t stride = 0;  // bytes from one row to the next; 0 = width * bytes_per_pixel(format)
  PixelFormat format = PixelFormat::RGB8;

  static ImageView rgb(const void* data, uint32_t width, uint32_t height, size_t stride = 0) noexcept {
    return {static_cast<const uint8_t*>(data), width, height, stride, PixelFormat::RGB8};
  }
  // OpenCV-style BGR buffers need no conversion: the library reorders the channels.
  static ImageView bgr(const void* data, uint32_t width, uint32_t height, size_t stride = 0) noexcept {
    return {static_cast<const uint8_t*>(data), width, height, stride, PixelFormat::BGR8};
  }

  TimmImage c_image() const noexcept {
    return TimmImage{data, width, height, stride, static_cast<TimmPixelFormat>(format)};
  }
};

// One of an image's top classes. label / description are absent when the config has none.
struct Class {
  size_t index = 0;
  float probability = 0.0f;  // softmax of the logits
  float logit = 0.0f;
  std::optional<std::string> label;        // e.g. "n02123159"
  std::optional<std::string> description;  // e.g. "tiger cat"
};

// Download progress of hf-hub: models: bytes done and total of the file being fetched.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// Model creation options (see timm_options_set for the keys). Move-only. Each option has a
// typed setter (options.hpp, generated from the library's table of options); set() takes any.
//
//   timm::Options opts;
//   opts.intra_op_threads(2).graph_optimization_level(timm::GraphOptimizationLevel::All);
//   opts.set("seed", "7");
class Options : public detail::OptionSetters<Options> {
 public:
  Options() : handle_(timm_options_new()) {
    if (!handle_) throw std::bad_alloc();
  }
  ~Options() { timm_options_free(handle_); }
  Options(Options&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), progress_(std::move(other.progress_)) {}
  Options& operator=(Options&& other) noexcept {
    if (this != &other) {
      timm_options_free(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
      progress_ = std::move(other.progress_);
    }
    return *this;
  }
  Options(const Options&) = delete;
  Options& operator=(const Options&) = delete;

  // Sets `key` to `value`; throws timm::Error (TIMM_ERR_INVALID_ARGUMENT) for an unknown key
  // or a bad value. The rvalue overload lets `auto o = timm::Options().set(...);` compile.
  Options& set(const std::string& key, const std::string& value) & {
    detail::check(timm_options_set(handle_, detail::c_str(key, "option key"), detail::c_str(value, "option value")));
    return *this;
  }
  Options&& set(const std::string& key, const std::string& value) && { return std::move(set(key, value)); }

  // Shorthand for set("intra_op_threads", n).
  Options& threads(int n) & { return set("intra_op_threads", std::to_string(n)); }
  Options&& threads(int n) && { return std::move(threads(n)); }

  // Calls `fn` with download progress while a model is created with these options (on the
  // creating thread). An exception thrown by `fn` cannot cross the C library: it is held and
  // rethrown from the timm::Model constructor once creation returns. An empty fn removes it.
  Options& on_progress(ProgressFn fn) & {
    if (!fn) {
      detail::check(timm_options_set_progress(handle_, nullptr, nullptr));
      progress_.reset();
      return *this;
    }
    // Heap-held so the pointer given to C survives moves of this Options.
    auto holder = std::make_unique<ProgressHolder>();
    holder->fn = std::move(fn);
    detail::check(timm_options_set_progress(handle_, &ProgressHolder::trampoline, holder.get()));
    progress_ = std::move(holder);
    return *this;
  }
  Options&& on_progress(ProgressFn fn) && { return std::move(on_progress(std::move(fn))); }

  const TimmOptions* get() const noexcept { return handle_; }

 private:
  friend class Model;

  struct ProgressHolder {
    ProgressFn fn;
    std::mutex mu;  // the same Options may create models on several threads at once
    std::exception_ptr error;

    static void trampoline(uint64_t done, uint64_t total, void* user_data) noexcept {
      auto* self = static_cast<ProgressHolder*>(user_data);
      try {
        self->fn(done, total);
      } catch (...) {
        std::lock_guard<std::mutex> lock(self->mu);
        if (!self->error) self->error = std::current_exception();
      }
    }
  };

  // The exception a progress callback threw during the last creation, if any (and clears it).
  std::exception_ptr take_progress_error() const {
    if (!progress_) return nullptr;
    std::lock_guard<std::mutex> lock(progress_->mu);
    return std::exchange(progress_->error, nullptr);
  }

  TimmOptions* handle_;
  std::unique_ptr<ProgressHolder> progress_;
};

// One output of Model::infer_outputs: a row-major tensor and its shape (NCHW for a feature map).
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// timm's feature_info of one feature map (output=feature_maps).
struct FeatureInfo {
  size_t channels = 0;
  size_t reduction = 0;  // the map's input stride
  std::string module;    // timm's module name: layer2, stages.1, blocks.11, ...
};

// A loaded model. Move-only; frees the C model on destruction.
class Model {
 public:
  // Loads `spec` (local:<folder>, hf-hub:org/name[@rev], or a timm name; see
  // timm_model_create). Throws timm::Error, e.g. TIMM_ERR_NOT_FOUND for a missing folder.
  explicit Model(const std::string& spec, bool pretrained = true, const Options& options = {}) : handle_(nullptr) {
    const TimmStatus status = timm_model_create(detail::c_str(spec, "model spec"), pretrained, options.get(), &handle_);
    std::exception_ptr progress_error = options.take_progress_error();
    if (status != TIMM_OK) {
      const std::string msg = detail::last_error();
      if (progress_error) std::rethrow_exception(progress_error);
      throw Error(status, msg.empty() ? std::string(timm_status_name(static_cast<int32_t>(status))) : msg);
    }
    if (progress_error) {
      timm_free(std::exchange(handle_, nullptr));
      std::rethrow_exception(progress_error);
    }
    data_chw_ = detail::model_input_size(handle_);
  }

  // Takes ownership of a model created through the C API.
  static Model adopt(TimmModel* handle) {
    if (!handle) detail::invalid_argument("Model::adopt: NULL model");
    return Model(handle);
  }

  ~Model() { timm_free(handle_); }
  Model(Model&& other) noexcept
      : handle_(std::exchange(other.handle_, nullptr)), data_chw_(std::exchange(other.data_chw_, {})) {}
  Model& operator=(Model&& other) noexcept {
    if (this != &other) {
      timm_free(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
      data_chw_ = std::exchange(other.data_chw_, {});
    }
    return *this;
  }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // False after the model was moved from or released; using it then throws
  // TIMM_ERR_INVALID_ARGUMENT.
  explicit operator bool() const noexcept { return handle_ != nullptr; }
  TimmModel* get() const noexcept { return handle_; }
  // Gives up ownership; the caller must timm_free the result.
  TimmModel* release() noexcept {
    data_chw_ = {};
    return std::exchange(handle_, nullptr);
  }

  // Runs a preprocessed NCHW batch (`shape` = {N, C, H, W}) into `out`, which holds
  // `out_len` floats (at least N * output_dim()). Thread-safe.
  void infer(const float* input, const std::vector<int64_t>& shape, float* out, size_t out_len) const {
    detail::check(timm_infer(handle_, input, shape.data(), shape.size(), out, out_len));
  }

  // Like above, returning N * output_dim() floats ([N, output_dim], row-major). The input
  // length must equal the product of `shape` (checked here, since C cannot see it).
  std::vector<float> infer(const std::vector<float>& input, const std::vector<int64_t>& shape) const {
    const std::optional<size_t> n = detail::element_count(shape);
    if (!n || shape.empty())
      detail::invalid_argument("input shape " + detail::shape_string(shape) + " is not a valid NCHW shape");
    if (*n != input.size())
      detail::invalid_argument("input has " + std::to_string(input.size()) + " floats but shape " +
                               detail::shape_string(shape) + " needs " + std::to_string(*n));
    std::vector<float> out(static_cast<size_t>(shape[0]) * output_dim());
    infer(input.data(), shape, out.data(), out.size());
    return out;
  }

  // Outputs the model returns: 1 for logits and features, one per map with output=feature_maps.
  size_t output_count() const noexcept { return timm_model_output_count(handle_); }

  // The shape output `index` has for an input of `input_shape` (NCHW).
  std::vector<int64_t> output_shape(size_t index, const std::vector<int64_t>& input_shape) const {
    std::array<int64_t, 8> dims{};
    size_t ndim = 0;
    detail::check(timm_model_output_shape(handle_, index, input_shape.data(), input_shape.size(), dims.data(),
                                          dims.size(), &ndim));
    return std::vector<int64_t>(dims.begin(), dims.begin() + static_cast<std::ptrdiff_t>(ndim));
  }

  // Runs a batch into caller buffers: outputs[i] holds lens[i] floats of output i. Thread-safe.
  void infer_outputs(const float* input, const std::vector<int64_t>& shape, float* const* outputs,
                     const size_t* lens, size_t count) const {
    detail::check(timm_infer_outputs(handle_, input, shape.data(), shape.size(), outputs, lens, count));
  }

  // Runs a batch and returns every output, shaped (the feature maps of output=feature_maps).
  std::vector<Tensor> infer_outputs(const std::vector<float>& input, const std::vector<int64_t>& shape) const {
    const std::optional<size_t> n = detail::element_count(shape);
    if (!n || shape.empty())
      detail::invalid_argument("input shape " + detail::shape_string(shape) + " is not a valid NCHW shape");
    if (*n != input.size())
      detail::invalid_argument("input has " + std::to_string(input.size()) + " floats but shape " +
                               detail::shape_string(shape) + " needs " + std::to_string(*n));
    std::vector<Tensor> out(output_count());
    std::vector<float*> ptrs;
    std::vector<size_t> lens;
    for (size_t i = 0; i < out.size(); i++) {
      out[i].shape = output_shape(i, shape);
      const std::optional<size_t> len = detail::element_count(out[i].shape);
      if (!len) detail::invalid_argument("output " + std::to_string(i) + " has no valid shape");
      out[i].data.resize(*len);
      ptrs.push_back(out[i].data.data());
      lens.push_back(out[i].data.size());
    }
    infer_outputs(input.data(), shape, ptrs.data(), lens.data(), out.size());
    return out;
  }

  // timm's feature_info of each output (empty unless output=feature_maps).
  std::vector<FeatureInfo> feature_info() const {
    std::vector<FeatureInfo> out;
    for (size_t i = 0; i < output_count(); i++) {
      FeatureInfo f;
      const char* module = nullptr;
      if (timm_model_feature_info(handle_, i, &f.channels, &f.reduction, &module) != TIMM_OK) return {};
      f.module = module ? module : "";
      out.push_back(std::move(f));
    }
    return out;
  }

  // Floats per image that infer writes (class count, or num_features with output=features).
  size_t output_dim() const noexcept { return timm_model_output_dim(handle_); }

  // {C, H, W} the model expects.
  std::array<int64_t, 3> input_size() const {
    std::array<int64_t, 3> chw{};
    detail::check(timm_model_input_size(handle_, chw.data()));
    return chw;
  }

  size_t num_classes() const noexcept { return timm_model_num_classes(handle_); }

  // Label name of class i, if the config has one.
  std::optional<std::string> label(size_t i) const {
    return detail::optional_string(timm_model_label(handle_, i));
  }

  // Description of class i, if the config has one.
  std::optional<std::string> description(size_t i) const {
    return detail::optional_string(timm_model_label_description(handle_, i));
  }

  // The resolved config as JSON.
  std::string config_json() const {
    const char* json = timm_model_config_json(handle_);
    if (!json) detail::invalid_argument("config_json: the model was moved from or released");
    return json;
  }

  // {C, H, W} that preprocess produces: input_size(), or the config's test_input_size when
  // the model was created with use_test_size=true. {0, 0, 0} after a move or release.
  std::array<int64_t, 3> data_input_size() const noexcept { return data_chw_; }

  // timm's eval transform (resize, center crop, normalize) of one image into `out`, which
  // holds `out_len` floats (at least C*H*W of data_input_size()). Thread-safe.
  void preprocess(const ImageView& image, float* out, size_t out_len) const {
    const TimmImage c = image.c_image();
    detail::check(timm_preprocess(handle_, &c, out, out_len));
  }

  // Like above, returning the C*H*W floats (CHW order), ready for infer with {1, C, H, W}.
  std::vector<float> preprocess(const ImageView& image) const {
    std::vector<float> out(static_cast<size_t>(data_chw_[0] * data_chw_[1] * data_chw_[2]));
    // The C call refuses a moved-from model; an empty vector's data() may be NULL, which it
    // would report instead, so give it a valid (zero-length) pointer.
    float none = 0.0f;
    preprocess(image, out.empty() ? &none : out.data(), out.size());
    return out;
  }

  // The `k` most probable classes of one image, most probable first. `k` must be in
  // 1..=num_classes() (the default 5 needs at least 5 classes). Thread-safe.
  std::vector<Class> classify(const ImageView& image, size_t k = 5) const {
    const TimmImage c = image.c_image();
    return std::move(classify_c(&c, 1, k).front());
  }

  // Classifies `images` as one batch (one inference): result[i] holds the `k` most probable
  // classes of images[i]. An empty batch gives an empty result. Thread-safe.
  std::vector<std::vector<Class>> classify(const std::vector<ImageView>& images, size_t k = 5) const {
    check_k(k);
    if (images.empty()) return {};
    std::vector<TimmImage> c;
    c.reserve(images.size());
    for (const ImageView& v : images) c.push_back(v.c_image());
    return classify_c(c.data(), c.size(), k);
  }

  // Decodes an image file (JPEG, PNG or WebP) and returns its `k` most probable classes.
  // TIMM_ERR_NOT_FOUND for a missing file, TIMM_ERR_INVALID_ARGUMENT for one that does not
  // decode. Thread-safe.
  std::vector<Class> classify_file(const std::string& path, size_t k = 5) const {
    check_k(k);
    std::vector<TimmClass> raw(k);
    detail::check(timm_classify_file(handle_, detail::c_str(path, "image path"), k, raw.data()));
    std::vector<Class> out;
    out.reserve(k);
    for (const TimmClass& r : raw) out.push_back(to_class(r));
    return out;
  }

 private:
  explicit Model(TimmModel* handle) noexcept : handle_(handle), data_chw_(detail::model_input_size(handle)) {}

  // The results buffer holds count * k entries, so k is checked here before it is sized
  // (a huge k would otherwise be a huge allocation before the library could refuse it).
  void check_k(size_t k) const {
    if (!handle_) detail::invalid_argument("the model was moved from or released");
    const size_t n = num_classes();
    if (k == 0 || k > n)
      detail::invalid_argument("k = " + std::to_string(k) + "; expected 1..=" + std::to_string(n) + " (num_classes)");
  }

  std::vector<std::vector<Class>> classify_c(const TimmImage* images, size_t count, size_t k) const {
    check_k(k);
    if (count > std::numeric_limits<size_t>::max() / k) detail::invalid_argument("count * k overflows");
    std::vector<TimmClass> raw(count * k);
    detail::check(timm_classify(handle_, images, count, k, raw.data()));
    std::vector<std::vector<Class>> out(count);
    for (size_t i = 0; i < count; ++i) {
      out[i].reserve(k);
      for (size_t j = 0; j < k; ++j) out[i].push_back(to_class(raw[i * k + j]));
    }
    return out;
  }

  // The label strings belong to the model; copied so a Class outlives it.
  static Class to_class(const TimmClass& r) {
    return Class{r.index, r.probability, r.logit, detail::optional_string(r.label),
                 detail::optional_string(r.description)};
  }

  TimmModel* handle_;
  std::array<int64_t, 3> data_chw_{};  // fixed at creation: see data_input_size()
};

}  // namespace timm

#endif  // TIMM_HPP
