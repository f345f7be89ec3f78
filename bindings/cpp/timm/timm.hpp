// libtimm C++ API: a header-only C++17 wrapper over timm.h.
//
//   timm::Model model("local:/models/resnet50.a1_in1k");
//   std::vector<float> logits = model.infer(pixels, {1, 3, 224, 224});
//
// Failures throw timm::Error, which carries the C status and the library's message.
// A timm::Model is move-only and may be used from many threads at once (infer and the
// accessors are const and thread-safe, as in the C API); it must not be moved from or
// destroyed while another thread uses it.
#ifndef TIMM_HPP
#define TIMM_HPP

#include <timm.h>

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

// Functions that return NULL report the status only as the message prefix "STATUS_NAME: ".
inline TimmStatus status_from_message(const std::string& msg) {
  for (int32_t s = TIMM_ERR_INVALID_ARGUMENT; s <= TIMM_ERR_INTERNAL; ++s) {
    const std::string name = timm_status_name(s);
    if (msg.compare(0, name.size(), name) == 0 && msg.size() > name.size() && msg[name.size()] == ':')
      return static_cast<TimmStatus>(s);
  }
  return TIMM_ERR_INTERNAL;
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

}  // namespace detail

// Download progress of hf-hub: models: bytes done and total of the file being fetched.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// Model creation options (see timm_options_set for the keys). Move-only.
//
//   timm::Options opts;
//   opts.set("intra_op_threads", "2").set("graph_optimization_level", "all");
class Options {
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

// A loaded model. Move-only; frees the C model on destruction.
class Model {
 public:
  // Loads `spec` (local:<folder>, hf-hub:org/name[@rev], or a timm name; see
  // timm_create_model). Throws timm::Error, e.g. TIMM_ERR_NOT_FOUND for a missing folder.
  explicit Model(const std::string& spec, bool pretrained = true, const Options& options = {})
      : handle_(timm_create_model_with_options(detail::c_str(spec, "model spec"), pretrained, options.get())) {
    std::exception_ptr progress_error = options.take_progress_error();
    if (!handle_) {
      const std::string msg = detail::last_error();
      if (progress_error) std::rethrow_exception(progress_error);
      throw Error(detail::status_from_message(msg), msg);
    }
    if (progress_error) {
      timm_free(std::exchange(handle_, nullptr));
      std::rethrow_exception(progress_error);
    }
  }

  // Takes ownership of a model created through the C API.
  static Model adopt(TimmModel* handle) {
    if (!handle) detail::invalid_argument("Model::adopt: NULL model");
    return Model(handle);
  }

  ~Model() { timm_free(handle_); }
  Model(Model&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
  Model& operator=(Model&& other) noexcept {
    if (this != &other) {
      timm_free(handle_);
      handle_ = std::exchange(other.handle_, nullptr);
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
  TimmModel* release() noexcept { return std::exchange(handle_, nullptr); }

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

 private:
  explicit Model(TimmModel* handle) noexcept : handle_(handle) {}
  TimmModel* handle_;
};

}  // namespace timm

#endif  // TIMM_HPP
