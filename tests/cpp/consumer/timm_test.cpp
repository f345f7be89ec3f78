// Tests of the installed C++ wrapper (timm/timm.hpp) against timm's reference outputs.
// The image API (preprocess, classify) is tested in image_test.cpp.
#include "test_support.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using timm_test::expect_error;
using timm_test::fixtures_dir;
using timm_test::test_options;

constexpr float kTolerance = 1e-4f;

struct FixtureInfo {
  const char* name;
  const char* folder;     // relative to TIMM_FIXTURES_DIR
  const char* reference;  // relative to TIMM_FIXTURES_DIR
};

const FixtureInfo kFixtures[] = {
#include "fixture_list.inc"
};

std::string spec_of(const FixtureInfo& f) { return "local:" + fixtures_dir() + "/" + f.folder; }

std::vector<float> read_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() % 4) throw std::runtime_error(path + ": size is not a multiple of 4");
  std::vector<float> out(bytes.size() / 4);
  // The files are little-endian float32; so is every platform this library targets.
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(out.data()));
  return out;
}

// The integer array `"key": [a, b, ...]` of a small, flat meta.json.
std::vector<int64_t> json_int_array(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t k = text.find("\"" + key + "\"");
  if (k == std::string::npos) throw std::runtime_error(path + ": no " + key);
  const size_t open = text.find('[', k), close = text.find(']', k);
  std::vector<int64_t> out;
  const char* p = text.c_str() + open + 1;
  while (p < text.c_str() + close) {
    char* end = nullptr;
    const long long v = std::strtoll(p, &end, 10);
    if (end == p) { ++p; continue; }
    out.push_back(v);
    p = end;
  }
  return out;
}

struct Reference {
  std::vector<float> input, logits;
  std::vector<int64_t> input_shape, logits_shape;
};

Reference reference_of(const FixtureInfo& f) {
  const std::string dir = fixtures_dir() + "/" + f.reference;
  return {read_f32(dir + "/input.f32"), read_f32(dir + "/logits.f32"),
          json_int_array(dir + "/meta.json", "input_shape"),
          json_int_array(dir + "/meta.json", "logits_shape")};
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float d = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

const FixtureInfo& resnet() {
  for (const auto& f : kFixtures)
    if (std::string(f.name) == "test_resnet") return f;
  return kFixtures[0];
}

static_assert(!std::is_copy_constructible_v<timm::Model>, "Model is move-only");
static_assert(std::is_nothrow_move_constructible_v<timm::Model>, "Model moves without throwing");
static_assert(!std::is_copy_constructible_v<timm::Options>, "Options is move-only");
static_assert(std::is_base_of_v<std::runtime_error, timm::Error>, "Error is a runtime_error");

}  // namespace

TEST(Version, MatchesTheInstalledPackage) {
  EXPECT_EQ(timm::version(), std::string(TIMM_PACKAGE_VERSION));
  EXPECT_EQ(timm::version(), std::string(timm_version()));
}

class FixtureLogits : public ::testing::TestWithParam<FixtureInfo> {};

TEST_P(FixtureLogits, MatchTimmWithinTolerance) {
  const FixtureInfo& f = GetParam();
  const Reference r = reference_of(f);
  ASSERT_EQ(r.input_shape.size(), 4u);
  ASSERT_EQ(r.logits_shape.size(), 2u);

  const timm::Model model(spec_of(f), true, test_options());
  const auto chw = model.input_size();
  EXPECT_EQ(chw[0], r.input_shape[1]);
  EXPECT_EQ(model.output_dim(), static_cast<size_t>(r.logits_shape[1]));

  // The reference batch may use a test size different from input_size: pass its own shape.
  const std::vector<float> logits = model.infer(r.input, r.input_shape);
  const float d = max_abs_diff(logits, r.logits);
  EXPECT_LE(d, kTolerance) << f.name << ": logits differ from timm by " << d;

  // The pointer overload writes the same values into a caller buffer.
  std::vector<float> out(r.logits.size(), NAN);
  model.infer(r.input.data(), r.input_shape, out.data(), out.size());
  EXPECT_EQ(out, logits);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FixtureLogits, ::testing::ValuesIn(kFixtures),
                         [](const ::testing::TestParamInfo<FixtureInfo>& info) {
                           std::string n = info.param.name;
                           std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
                           return n;
                         });

TEST(Model, Accessors) {
  const timm::Model model(spec_of(resnet()));
  EXPECT_TRUE(static_cast<bool>(model));
  EXPECT_EQ(model.num_classes(), 10u);
  EXPECT_EQ(model.output_dim(), 10u);
  // test_resnet's config.json input_size (the fixtures are generated at 64x64).
  EXPECT_EQ(model.input_size(), (std::array<int64_t, 3>{3, 64, 64}));
  EXPECT_EQ(model.label(model.num_classes() + 100), std::nullopt);
  EXPECT_EQ(model.description(model.num_classes() + 100), std::nullopt);
  const std::string json = model.config_json();
  EXPECT_NE(json.find("\"architecture\""), std::string::npos) << json;
  EXPECT_NE(json.find("test_resnet"), std::string::npos) << json;
}

TEST(Model, OptionsAreApplied) {
  const Reference r = reference_of(resnet());
  const timm::Model loaded(spec_of(resnet()), true, test_options());  // ONNX Runtime is now loaded for the process

  // A different runtime library is refused once one is loaded: proof that the options reach
  // the library (the same spec without them succeeds just above).
  timm::Options other_runtime;
  other_runtime.set("ort_library", fixtures_dir() + "/no/libonnxruntime.so");
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { timm::Model m(spec_of(resnet()), true, other_runtime); });

  // Chaining on a temporary yields a usable Options (rvalue overloads).
  auto chained = timm::Options().set("graph", "onnx").set("graph_optimization_level", "all").threads(1);
  const timm::Model model(spec_of(resnet()), true, chained);
  EXPECT_LE(max_abs_diff(model.infer(r.input, r.input_shape), r.logits), kTolerance);

  // The typed setters (generated from the library's table of options) reach the library:
  // output=features changes what infer returns (one model, since each costs seconds under valgrind).
  auto typed = timm::Options()
                   .graph(timm::Graph::Native)
                   .graph_optimization_level(timm::GraphOptimizationLevel::Basic)
                   .intra_op_threads(1)
                   .weights_memory(timm::WeightsMemory::Copy)
                   .providers({timm::Provider::CPU})
                   .output(timm::Output::Features);
  EXPECT_NE(timm::Model(spec_of(resnet()), true, typed).output_dim(), model.output_dim());
}

TEST(Model, ProgressCallbackIsNotCalledForLocalFolders) {
  // Local folders download nothing; the callback machinery must still be harmless to set,
  // replace and remove, and survive moving the Options.
  int calls = 0;
  timm::Options opts = test_options();
  opts.on_progress([&](uint64_t, uint64_t) { ++calls; });
  opts.on_progress([&](uint64_t, uint64_t) { calls += 2; });
  timm::Options moved = std::move(opts);
  const timm::Model model(spec_of(resnet()), true, moved);
  EXPECT_EQ(calls, 0);
  moved.on_progress(nullptr);
  const timm::Model again(spec_of(resnet()), true, moved);
  EXPECT_EQ(model.output_dim(), again.output_dim());
}

// A fake Hugging Face Hub on 127.0.0.1 serving one repo's files at /{repo}/resolve/{rev}/{file}
// with the headers libtimm's hf-hub: downloads need (X-Repo-Commit, ETag, Content-Length).
class FakeHub {
 public:
  FakeHub(std::string repo, std::map<std::string, std::string> files)
      : repo_(std::move(repo)), files_(std::move(files)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      throw std::runtime_error("fake hub: cannot listen on 127.0.0.1");
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeHub() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept()
    thread_.join();
    ::close(fd_);
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  void serve() {
    while (!stop_) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      std::string req;
      char buf[4096];
      ssize_t n;
      while (req.find("\r\n\r\n") == std::string::npos && (n = ::read(c, buf, sizeof buf)) > 0) req.append(buf, static_cast<size_t>(n));
      const std::string method = req.substr(0, req.find(' '));
      const size_t p0 = req.find(' ') + 1;
      const std::string path = req.substr(p0, req.find(' ', p0) - p0);
      const std::string prefix = "/" + repo_ + "/resolve/";
      const std::string file = path.rfind(prefix, 0) == 0 ? path.substr(path.find('/', prefix.size()) + 1) : "";
      std::string head, body;
      auto it = files_.find(file);
      if (it == files_.end()) {
        head = "HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nContent-Length: 0\r\n";
      } else {
        // A git-sha1-style ETag: libtimm checks the size only (sha256 ETags are for LFS files).
        const std::string etag = std::string(39, 'a') + std::to_string(std::distance(files_.begin(), it));
        head = "HTTP/1.1 200 OK\r\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\nETag: \"" + etag +
               "\"\r\nContent-Length: " + std::to_string(it->second.size()) + "\r\n";
        if (method == "GET") body = it->second;
      }
      const std::string resp = head + "Connection: close\r\n\r\n" + body;
      for (size_t sent = 0; sent < resp.size();) {
        const ssize_t w = ::write(c, resp.data() + sent, resp.size() - sent);
        if (w <= 0) break;
        sent += static_cast<size_t>(w);
      }
      ::close(c);
    }
  }

  std::string repo_;
  std::map<std::string, std::string> files_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

timm::Options hub_options(const FakeHub& hub, const std::string& cache) {
  timm::Options opts = test_options();
  opts.set("endpoint", hub.endpoint()).set("cache_dir", cache).set("offline", "false").set("token", "");
  return opts;
}

class HubProgress : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/timm-cpp-hub.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    cache_ = tmpl;
    const std::string dir = fixtures_dir() + "/" + resnet().folder;
    weights_ = read_file(dir + "/model.safetensors");
    hub_ = std::make_unique<FakeHub>("timm/test_resnet", std::map<std::string, std::string>{
                                                             {"config.json", read_file(dir + "/config.json")},
                                                             {"model.safetensors", weights_}});
  }
  void TearDown() override { std::filesystem::remove_all(cache_); }

  std::string cache_, weights_;
  std::unique_ptr<FakeHub> hub_;
};

TEST_F(HubProgress, CallbackSeesTheDownload) {
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  timm::Options opts = hub_options(*hub_, cache_);
  opts.on_progress([&](uint64_t done, uint64_t total) { calls.emplace_back(done, total); });
  try {
    timm::Model m("hf-hub:timm/test_resnet", true, opts);
  } catch (const timm::Error& e) {
    // The download must work; building may not (safetensors-only repos need a native graph
    // builder for the architecture, which a build may lack).
    EXPECT_EQ(e.status(), TIMM_ERR_UNSUPPORTED) << e.what();
  }
  const std::pair<uint64_t, uint64_t> finished{weights_.size(), weights_.size()};
  EXPECT_NE(std::find(calls.begin(), calls.end(), finished), calls.end()) << calls.size() << " calls";
}

TEST_F(HubProgress, ExceptionFromTheCallbackIsRethrown) {
  struct Stop : std::runtime_error {
    Stop() : std::runtime_error("stop") {}
  };
  timm::Options opts = hub_options(*hub_, cache_);
  opts.on_progress([](uint64_t, uint64_t) { throw Stop(); });
  EXPECT_THROW(timm::Model("hf-hub:timm/test_resnet", true, opts), Stop);
  // The held exception was consumed: without a throwing callback the same options work again.
  opts.on_progress([](uint64_t, uint64_t) {});
  try {
    timm::Model m("hf-hub:timm/test_resnet", true, opts);
  } catch (const timm::Error& e) {
    EXPECT_EQ(e.status(), TIMM_ERR_UNSUPPORTED) << e.what();
  }
}

TEST(Errors, MissingFolderIsNotFound) {
  expect_error(TIMM_ERR_NOT_FOUND, [] { timm::Model m("local:" + fixtures_dir() + "/models/no_such_model"); });
}

TEST(Errors, BadOptionKeyIsInvalidArgument) {
  timm::Options opts = test_options();
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { opts.set("no_such_option", "1"); });
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { opts.set("intra_op_threads", "many"); });
  // A failed set leaves the options usable.
  opts.threads(1);
  const timm::Model model(spec_of(resnet()), true, opts);
  EXPECT_EQ(model.num_classes(), 10u);
}

TEST(Errors, MalformedSpecIsInvalidArgument) {
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [] { timm::Model m("nonsense-scheme:abc"); });
  // A NUL would cut the C string short and load a different folder: refused.
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [] { timm::Model m(spec_of(resnet()) + std::string("\0/x", 3)); });
}

TEST(Errors, WrongInputShape) {
  const timm::Model model(spec_of(resnet()), true, test_options());
  // Consistent length, but 4 channels: the library rejects the shape.
  const std::vector<int64_t> shape{1, 4, 160, 160};
  std::vector<float> input(4 * 160 * 160, 0.5f);
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { model.infer(input, shape); });
  // Three dimensions instead of four.
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { model.infer(std::vector<float>(3 * 160 * 160), {3, 160, 160}); });
  // Input length disagreeing with the shape is caught before C could read past the vector.
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { model.infer(std::vector<float>(10), {1, 3, 160, 160}); });
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { model.infer(std::vector<float>(10), {1, -3, 160, 160}); });
}

TEST(Errors, BufferTooSmall) {
  const timm::Model model(spec_of(resnet()), true, test_options());
  const Reference r = reference_of(resnet());
  std::vector<float> out(model.output_dim());  // room for one image, the batch has two
  expect_error(TIMM_ERR_BUFFER_TOO_SMALL, [&] { model.infer(r.input.data(), r.input_shape, out.data(), out.size()); });
}

TEST(Moves, TransferOwnership) {
  // One image of the reference batch: enough to tell models apart, and cheap under valgrind.
  const Reference r = reference_of(resnet());
  const std::vector<int64_t> shape{1, r.input_shape[1], r.input_shape[2], r.input_shape[3]};
  const std::vector<float> image(r.input.begin(), r.input.begin() + static_cast<std::ptrdiff_t>(r.input.size() / 2));
  timm::Model a(spec_of(resnet()), true, test_options());
  const auto before = a.infer(image, shape);
  EXPECT_LE(max_abs_diff(before, std::vector<float>(r.logits.begin(), r.logits.begin() + 10)), kTolerance);

  timm::Model b(std::move(a));
  EXPECT_FALSE(static_cast<bool>(a));  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_TRUE(static_cast<bool>(b));
  EXPECT_EQ(b.infer(image, shape), before);
  // A moved-from model is empty, not dangling: calls fail cleanly.
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { a.infer(image, shape); });
  EXPECT_EQ(a.output_dim(), 0u);

  // Move-assigning over a live model frees the old one (valgrind checks for the leak).
  timm::Model c(spec_of(resnet()), true, test_options());
  c = std::move(b);
  EXPECT_EQ(c.output_dim(), 10u);
  timm::Model& same = c;  // (an alias, so compilers do not reject the deliberate self-move)
  c = std::move(same);  // self-move keeps the model
  EXPECT_TRUE(static_cast<bool>(c));

  // release/adopt round-trips through the C API.
  TimmModel* raw = c.release();
  EXPECT_FALSE(static_cast<bool>(c));
  timm::Model d = timm::Model::adopt(raw);
  EXPECT_EQ(d.infer(image, shape), before);
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [] { timm::Model::adopt(nullptr); });
}

TEST(Threads, ConcurrentInferEqualsSequential) {
  const Reference r = reference_of(resnet());
  const timm::Model model(spec_of(resnet()));
  const auto expected = model.infer(r.input, r.input_shape);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i)
        if (model.infer(r.input, r.input_shape) != expected) ++mismatches[t];
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(Backbone, FeatureMapsMatchTimmFeaturesOnly) {
  // test_byobnet's first features_only reference: timm's default out_indices (stem, three
  // stages and the final conv) on the fixture's own input, maps in fmap0_<i>.f32.
  const FixtureInfo* f = nullptr;
  for (const auto& c : kFixtures)
    if (std::string(c.name) == "test_byobnet") f = &c;
  ASSERT_NE(f, nullptr);
  const Reference r = reference_of(*f);
  auto opts = test_options();
  opts.output(timm::Output::FeatureMaps);
  const timm::Model model(spec_of(*f), true, opts);
  ASSERT_EQ(model.output_count(), 5u);
  const std::vector<timm::FeatureInfo> info = model.feature_info();
  ASSERT_EQ(info.size(), 5u);
  EXPECT_EQ(info[0].module, "stem");
  EXPECT_EQ(info[4].module, "final_conv");
  size_t last_reduction = 0;
  for (const auto& fi : info) {
    EXPECT_GE(fi.reduction, last_reduction) << fi.module;
    last_reduction = fi.reduction;
  }
  const std::vector<timm::Tensor> maps = model.infer_outputs(r.input, r.input_shape);
  ASSERT_EQ(maps.size(), 5u);
  for (size_t i = 0; i < maps.size(); ++i) {
    const std::vector<float> want =
        read_f32(fixtures_dir() + "/" + f->reference + "/fmap0_" + std::to_string(i) + ".f32");
    ASSERT_EQ(maps[i].shape.size(), 4u);
    EXPECT_EQ(maps[i].shape[0], r.input_shape[0]);
    EXPECT_EQ(static_cast<size_t>(maps[i].shape[1]), info[i].channels);
    float scale = 1e-12f;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    EXPECT_LE(max_abs_diff(maps[i].data, want) / scale, kTolerance) << "map " << i;
  }
  // timm_infer refuses a model with several outputs and names timm_infer_outputs.
  try {
    model.infer(r.input, r.input_shape);
    ADD_FAILURE() << "infer on a feature-map model must throw";
  } catch (const timm::Error& e) {
    EXPECT_EQ(e.status(), TIMM_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("timm_infer_outputs"), std::string::npos) << e.what();
  }
}
