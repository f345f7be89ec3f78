// Tests of the C++ image API (ImageView, preprocess, classify, classify_file) on the demo model
// tf_efficientnet_lite0.in1k (real ImageNet weights) against timm's top-5 for chelsea.png.
#include "test_support.hpp"

#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace {

using timm_test::expect_error;
using timm_test::fixtures_dir;
using timm_test::test_options;

// timm's probabilities are float32 softmax from PyTorch; ours come from ONNX Runtime.
constexpr float kProbabilityTolerance = 1e-3f;

struct DemoClass {
  size_t index;
  const char* label;
  const char* description;
  float probability;
};
#include "demo_top5.inc"  // kDemoImage, kDemoTop5 (from top5.json, by CMake)

std::string demo_dir() { return TIMM_DEMO_MODEL_DIR; }
std::string image_path(const std::string& name) { return fixtures_dir() + "/images/" + name; }
std::string demo_image() { return fixtures_dir() + "/" + kDemoImage; }

bool demo_present() { return std::filesystem::exists(demo_dir() + "/config.json"); }
#define REQUIRE_DEMO_MODEL()                                                                      \
  ASSERT_TRUE(demo_present()) << "the demo model " << demo_dir()                                 \
                              << " is missing: run scripts/fetch-demo-model (scripts/test does)"

// One demo model for the whole run: loading it is the slow part under valgrind. Freed at exit,
// so valgrind still sees timm_free release everything.
const timm::Model& demo() {
  static const timm::Model model("local:" + demo_dir(), true, test_options());
  return model;
}

// classify_file(chelsea.png) with the default k (5), run once: every inference of this model
// costs seconds under valgrind, and several tests compare against it.
const std::vector<timm::Class>& chelsea_top5() {
  static const std::vector<timm::Class> top = demo().classify_file(demo_image());
  return top;
}

// A decoded PNG: `height` rows of `stride` bytes, of which the first width * 3 are RGB.
struct Pixels {
  std::vector<uint8_t> bytes;
  uint32_t width = 0, height = 0;
  size_t stride = 0;
};

// Reads an 8-bit PNG as RGB with libpng, rows `pad` bytes longer than needed (filled with 0xAB,
// which the library must ignore). The buffer ends right after the last row's pixels, as the
// image contract allows, so valgrind catches a read past it.
Pixels read_png_rgb(const std::string& path, size_t pad = 0) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str()))
    throw std::runtime_error(path + ": " + img.message);
  img.format = PNG_FORMAT_RGB;
  const size_t row = PNG_IMAGE_ROW_STRIDE(img);  // components = bytes for 8-bit
  Pixels p;
  p.width = img.width;
  p.height = img.height;
  p.stride = row + pad;
  p.bytes.assign(p.stride * p.height, 0xAB);
  if (!png_image_finish_read(&img, nullptr, p.bytes.data(), static_cast<png_int_32>(p.stride), nullptr)) {
    png_image_free(&img);
    throw std::runtime_error(path + ": " + img.message);
  }
  p.bytes.resize(p.stride * (p.height - 1) + row);
  p.bytes.shrink_to_fit();
  return p;
}

// `src` (RGB) rewritten pixel by pixel into `format`, with `pad` spare bytes per row.
Pixels convert(const Pixels& src, timm::PixelFormat format, size_t pad) {
  const size_t bpp = timm::bytes_per_pixel(format);
  Pixels out;
  out.width = src.width;
  out.height = src.height;
  out.stride = src.width * bpp + pad;
  out.bytes.assign(out.stride * (out.height - 1) + src.width * bpp, 0xCD);
  for (uint32_t y = 0; y < src.height; ++y)
    for (uint32_t x = 0; x < src.width; ++x) {
      const uint8_t* s = &src.bytes[y * src.stride + x * 3];
      uint8_t* d = &out.bytes[y * out.stride + x * bpp];
      const uint8_t alpha = static_cast<uint8_t>(x * 7 + y * 13);  // dropped, not blended
      switch (format) {
        case timm::PixelFormat::RGB8: d[0] = s[0], d[1] = s[1], d[2] = s[2]; break;
        case timm::PixelFormat::BGR8: d[0] = s[2], d[1] = s[1], d[2] = s[0]; break;
        case timm::PixelFormat::RGBA8: d[0] = s[0], d[1] = s[1], d[2] = s[2], d[3] = alpha; break;
        case timm::PixelFormat::BGRA8: d[0] = s[2], d[1] = s[1], d[2] = s[0], d[3] = alpha; break;
        case timm::PixelFormat::GRAY8: d[0] = s[1]; break;
      }
    }
  return out;
}

timm::ImageView view(const Pixels& p, timm::PixelFormat format) {
  return timm::ImageView{p.bytes.data(), p.width, p.height, p.stride, format};
}

void expect_same_classes(const std::vector<timm::Class>& got, const std::vector<timm::Class>& want, float tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].index, want[i].index) << "rank " << i;
    EXPECT_NEAR(got[i].probability, want[i].probability, tol) << "rank " << i;
    EXPECT_NEAR(got[i].logit, want[i].logit, tol * 10) << "rank " << i;
    EXPECT_EQ(got[i].label, want[i].label) << "rank " << i;
    EXPECT_EQ(got[i].description, want[i].description) << "rank " << i;
  }
}

}  // namespace

TEST(ClassifyFile, MatchesTimmTop5) {
  REQUIRE_DEMO_MODEL();
  const std::vector<timm::Class>& top = chelsea_top5();  // the default k is 5
  ASSERT_EQ(top.size(), std::size(kDemoTop5));
  for (size_t i = 0; i < top.size(); ++i) {
    const DemoClass& want = kDemoTop5[i];
    EXPECT_EQ(top[i].index, want.index) << "rank " << i;
    EXPECT_EQ(top[i].label, std::optional<std::string>(want.label)) << "rank " << i;
    EXPECT_EQ(top[i].description, std::optional<std::string>(want.description)) << "rank " << i;
    EXPECT_NEAR(top[i].probability, want.probability, kProbabilityTolerance) << "rank " << i;
    // The labels are the model's own (the same strings the accessors return).
    EXPECT_EQ(top[i].label, demo().label(top[i].index));
    EXPECT_EQ(top[i].description, demo().description(top[i].index));
    if (i > 0) {
      EXPECT_LE(top[i].probability, top[i - 1].probability);
    }
  }
}

TEST(Classify, BgrBufferEqualsRgbAndTheFile) {
  REQUIRE_DEMO_MODEL();
  const Pixels rgb = read_png_rgb(demo_image(), /*pad=*/5);
  const Pixels bgr = convert(rgb, timm::PixelFormat::BGR8, /*pad=*/0);  // packed, stride given explicitly
  const timm::ImageView bgr_view = timm::ImageView::bgr(bgr.bytes.data(), bgr.width, bgr.height);
  EXPECT_EQ(bgr_view.stride, 0u);  // 0 means packed

  const auto& from_file = chelsea_top5();
  const auto from_rgb = demo().classify(view(rgb, timm::PixelFormat::RGB8), 5);
  const auto from_bgr = demo().classify(bgr_view, 5);
  // The same pixels through the same transform and graph: identical results.
  expect_same_classes(from_rgb, from_file, 0.0f);
  expect_same_classes(from_bgr, from_rgb, 0.0f);
  ASSERT_FALSE(from_bgr.empty());
  EXPECT_EQ(from_bgr[0].description, std::optional<std::string>(kDemoTop5[0].description));

  // Reading the buffer as RGB (channels swapped) must change the answer: proof that the
  // format reaches the library rather than being ignored.
  const timm::ImageView swapped{bgr.bytes.data(), bgr.width, bgr.height, 0, timm::PixelFormat::RGB8};
  EXPECT_NE(demo().preprocess(swapped), demo().preprocess(bgr_view));
}

TEST(Preprocess, AllPixelFormatsAgree) {
  REQUIRE_DEMO_MODEL();
  const Pixels rgb = read_png_rgb(demo_image());
  const std::vector<float> want = demo().preprocess(view(rgb, timm::PixelFormat::RGB8));
  const auto chw = demo().data_input_size();
  EXPECT_EQ(chw, demo().input_size());
  EXPECT_EQ(want.size(), static_cast<size_t>(chw[0] * chw[1] * chw[2]));
  EXPECT_EQ(want.size(), 3u * 224 * 224);

  for (const auto format : {timm::PixelFormat::BGR8, timm::PixelFormat::RGBA8, timm::PixelFormat::BGRA8}) {
    const Pixels p = convert(rgb, format, /*pad=*/3);
    EXPECT_EQ(demo().preprocess(view(p, format)), want) << "format " << static_cast<int>(format);
  }
  // Gray is replicated to RGB: equal to an RGB image whose channels are all the gray value.
  const Pixels gray = convert(rgb, timm::PixelFormat::GRAY8, /*pad=*/1);
  Pixels gray_rgb = rgb;
  for (uint32_t y = 0; y < rgb.height; ++y)
    for (uint32_t x = 0; x < rgb.width; ++x)
      std::fill_n(&gray_rgb.bytes[y * rgb.stride + x * 3], 3, gray.bytes[y * gray.stride + x]);
  EXPECT_EQ(demo().preprocess(view(gray, timm::PixelFormat::GRAY8)),
            demo().preprocess(view(gray_rgb, timm::PixelFormat::RGB8)));
}

TEST(Preprocess, PointerOverloadAndInfer) {
  REQUIRE_DEMO_MODEL();
  const Pixels rgb = read_png_rgb(demo_image());
  const timm::ImageView v = view(rgb, timm::PixelFormat::RGB8);
  const std::vector<float> want = demo().preprocess(v);

  std::vector<float> out(want.size() + 4, -7.0f);  // a larger buffer is fine; the tail is untouched
  demo().preprocess(v, out.data(), out.size());
  EXPECT_TRUE(std::equal(want.begin(), want.end(), out.begin()));
  EXPECT_EQ(out.back(), -7.0f);
  expect_error(TIMM_ERR_BUFFER_TOO_SMALL, [&] { demo().preprocess(v, out.data(), want.size() - 1); });

  // preprocess + infer is what classify does: the same top class, the same logit.
  const auto chw = demo().data_input_size();
  const std::vector<float> logits = demo().infer(want, {1, chw[0], chw[1], chw[2]});
  const auto top = demo().classify(v, 1);
  ASSERT_EQ(logits.size(), demo().num_classes());
  const size_t argmax = static_cast<size_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  EXPECT_EQ(top[0].index, argmax);
  EXPECT_NEAR(top[0].logit, logits[argmax], 1e-4f);
}

TEST(Classify, BatchHasOneResultPerImage) {
  REQUIRE_DEMO_MODEL();
  const Pixels cat = read_png_rgb(demo_image());
  const Pixels coffee = convert(read_png_rgb(image_path("coffee.png")), timm::PixelFormat::BGR8, 2);
  const std::vector<timm::ImageView> batch{view(cat, timm::PixelFormat::RGB8), view(coffee, timm::PixelFormat::BGR8)};
  const auto results = demo().classify(batch, 3);
  ASSERT_EQ(results.size(), 2u);
  // Batched and single runs may differ in the last bits (other kernels): compare closely.
  // k = 3 is the head of the same ranking.
  expect_same_classes(results[0], std::vector<timm::Class>(chelsea_top5().begin(), chelsea_top5().begin() + 3), 1e-5f);
  expect_same_classes(results[1], demo().classify(batch[1], 3), 1e-5f);
  EXPECT_NE(results[0][0].index, results[1][0].index);  // a cat is not a coffee cup
  EXPECT_TRUE(demo().classify(std::vector<timm::ImageView>{}, 3).empty());
}

TEST(Preprocess, TestSizeChangesTheDataInputSize) {
  // resnet18-tiny: input_size 32 but test_input_size 288 in its config.json.
  const std::string spec = "local:" + fixtures_dir() + "/models/resnet18-tiny";
  const timm::Model plain(spec, true, test_options());
  EXPECT_EQ(plain.data_input_size(), (std::array<int64_t, 3>{3, 32, 32}));
  timm::Options opts = test_options();
  opts.set("use_test_size", "true");
  const timm::Model test_size(spec, true, opts);
  EXPECT_EQ(test_size.input_size(), (std::array<int64_t, 3>{3, 288, 288}));
  EXPECT_EQ(test_size.data_input_size(), (std::array<int64_t, 3>{3, 288, 288}));

  const Pixels rgb = read_png_rgb(demo_image());
  const timm::ImageView v = view(rgb, timm::PixelFormat::RGB8);
  EXPECT_EQ(plain.preprocess(v).size(), 3u * 32 * 32);
  EXPECT_EQ(test_size.preprocess(v).size(), 3u * 288 * 288);
}

TEST(Classify, AllClassesWithoutLabels) {
  // resnet18-tiny: 4 classes and no label names in its config.
  const timm::Model model("local:" + fixtures_dir() + "/models/resnet18-tiny", true, test_options());
  const Pixels rgb = read_png_rgb(demo_image());
  const timm::ImageView v = view(rgb, timm::PixelFormat::RGB8);
  // k = num_classes ranks every class; the probabilities are a softmax, so they sum to 1.
  const auto all = model.classify(v, model.num_classes());
  ASSERT_EQ(all.size(), 4u);
  float sum = 0;
  std::vector<size_t> indices;
  for (const auto& c : all) {
    sum += c.probability;
    indices.push_back(c.index);
    EXPECT_EQ(c.label, std::nullopt);
    EXPECT_EQ(c.description, std::nullopt);
  }
  EXPECT_NEAR(sum, 1.0f, 1e-5f);
  std::sort(indices.begin(), indices.end());
  EXPECT_EQ(indices, (std::vector<size_t>{0, 1, 2, 3}));
  // The default k = 5 is more than this model's 4 classes.
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { model.classify(v); });
}

TEST(Errors, ClassifyArguments) {
  REQUIRE_DEMO_MODEL();
  const Pixels rgb = read_png_rgb(demo_image());
  const timm::ImageView v = view(rgb, timm::PixelFormat::RGB8);
  const size_t n = demo().num_classes();
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().classify(v, 0); });
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().classify(v, n + 1); });
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().classify(std::vector<timm::ImageView>{v}, 0); });
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().classify_file(demo_image(), 0); });
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().classify_file(demo_image(), static_cast<size_t>(-1)); });

  // Images the library refuses: a row longer than the stride, an empty size, no data, a
  // format value that is not a PixelFormat. One bad image fails the whole batch.
  timm::ImageView short_stride = v;
  short_stride.stride = rgb.width * 3 - 1;
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().classify(short_stride, 5); });
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().preprocess(short_stride); });
  timm::ImageView empty = v;
  empty.width = 0;
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().preprocess(empty); });
  const timm::ImageView no_data{nullptr, 4, 4, 0, timm::PixelFormat::RGB8};
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().classify(std::vector<timm::ImageView>{v, no_data}, 5); });
  timm::ImageView bad_format = v;
  bad_format.format = static_cast<timm::PixelFormat>(99);
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().preprocess(bad_format); });
}

TEST(Errors, ClassifyFileMissingAndUndecodable) {
  REQUIRE_DEMO_MODEL();
  expect_error(TIMM_ERR_NOT_FOUND, [] { demo().classify_file(image_path("no_such_image.png")); });
  const std::string junk = (std::filesystem::temp_directory_path() / ("timm-cpp-junk-" + std::to_string(::getpid()) + ".png")).string();
  {
    std::ofstream f(junk, std::ios::binary);
    f << "this is not an image";
  }
  try {
    expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { demo().classify_file(junk); });
  } catch (...) {
    std::filesystem::remove(junk);
    throw;
  }
  std::filesystem::remove(junk);
  // A NUL would cut the path short and read another file: refused.
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [] { demo().classify_file(demo_image() + std::string("\0.x", 3)); });
}

TEST(Errors, MovedFromModelRefusesImages) {
  const std::string spec = "local:" + fixtures_dir() + "/models/resnet18-tiny";
  timm::Model a(spec, true, test_options());
  const std::array<int64_t, 3> chw = a.data_input_size();
  timm::Model b(std::move(a));
  EXPECT_EQ(b.data_input_size(), chw);  // the move carries it
  EXPECT_EQ(a.data_input_size(), (std::array<int64_t, 3>{0, 0, 0}));  // NOLINT(bugprone-use-after-move)
  const uint8_t pixels[2 * 2 * 3] = {};
  const auto v = timm::ImageView::rgb(pixels, 2, 2);
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { a.preprocess(v); });
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { a.classify(v, 1); });
  expect_error(TIMM_ERR_INVALID_ARGUMENT, [&] { a.classify_file(demo_image(), 1); });
  EXPECT_EQ(b.classify(v, 1).size(), 1u);
  // release/adopt keeps the data input size (the adopting constructor asks the library again).
  timm::Model c = timm::Model::adopt(b.release());
  EXPECT_EQ(c.data_input_size(), chw);
}

TEST(Threads, ConcurrentClassifyEqualsSequential) {
  REQUIRE_DEMO_MODEL();
  const auto& want = chelsea_top5();
  const Pixels bgr = convert(read_png_rgb(demo_image()), timm::PixelFormat::BGR8, 0);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(3, 0);
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2; ++i) {
        const auto got = t % 2 ? demo().classify_file(demo_image(), 5) : demo().classify(view(bgr, timm::PixelFormat::BGR8), 5);
        for (size_t r = 0; r < want.size(); ++r)
          if (got[r].index != want[r].index || got[r].probability != want[r].probability) ++mismatches[t];
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(3, 0));
}
