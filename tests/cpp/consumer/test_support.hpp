// Helpers shared by the C++ consumer tests (timm_test.cpp, image_test.cpp).
#ifndef TIMM_TEST_SUPPORT_HPP
#define TIMM_TEST_SUPPORT_HPP

#include <timm/timm.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace timm_test {

inline std::string fixtures_dir() { return TIMM_FIXTURES_DIR; }

// Options for most test models: TIMM_TEST_INTRA_OP_THREADS (set to 1 for the valgrind run,
// where ONNX Runtime's spinning worker threads make everything many times slower).
inline timm::Options test_options() {
  timm::Options opts;
  if (const char* n = std::getenv("TIMM_TEST_INTRA_OP_THREADS")) opts.set("intra_op_threads", n);
  return opts;
}

// Runs `fn`, expecting a timm::Error with `status` whose message starts with the status name.
template <typename Fn>
void expect_error(TimmStatus status, Fn&& fn) {
  try {
    fn();
    ADD_FAILURE() << "expected " << timm_status_name(status) << ", nothing was thrown";
  } catch (const timm::Error& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    EXPECT_STREQ(e.status_name(), timm_status_name(status));
    EXPECT_EQ(std::string(e.what()).rfind(timm_status_name(status), 0), 0u) << e.what();
  }
}

}  // namespace timm_test

#endif  // TIMM_TEST_SUPPORT_HPP
