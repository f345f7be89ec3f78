// classify: prints each image's top-5 classes with a timm model, through libtimm's C++ API.
//
//   classify <spec> <image> [<image> ...]    e.g. classify local:.models/tf_efficientnet_lite0.in1k cat.png
//
// Build against an install (scripts/install <prefix>), with the CMakeLists.txt beside this file:
//   cmake -S examples/cpp -B build-example -DCMAKE_PREFIX_PATH=<prefix> && cmake --build build-example
#include <timm/timm.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " <spec> <image> [<image> ...]\n";
    return 2;
  }
  try {
    const timm::Model model(argv[1]);
    // k must not exceed the class count (small test models have fewer than 5).
    const size_t k = std::min<size_t>(5, model.num_classes());
    int rc = 0;
    for (int i = 2; i < argc; ++i) {
      try {
        const std::vector<timm::Class> top = model.classify_file(argv[i], k);
        std::cout << argv[i] << "\n";
        for (size_t r = 0; r < top.size(); ++r) {
          const timm::Class& c = top[r];
          // Descriptions ("tiger cat") read better than label names ("n02123159"); either may be absent.
          const std::string name = c.description.value_or(c.label.value_or("class " + std::to_string(c.index)));
          std::printf("  %zu. %-28s %6.2f%%  (class %zu, logit %.3f)%s%s\n", r + 1, name.c_str(), 100.0 * c.probability,
                      c.index, c.logit, c.label && c.description ? "  " : "",
                      c.label && c.description ? c.label->c_str() : "");
        }
      } catch (const timm::Error& e) {  // one bad file does not stop the others
        std::cerr << "classify: " << argv[i] << ": " << e.what() << "\n";
        rc = 1;
      }
    }
    return rc;
  } catch (const timm::Error& e) {
    std::cerr << "classify: " << argv[1] << ": " << e.what() << "\n";
    return 1;
  }
}
