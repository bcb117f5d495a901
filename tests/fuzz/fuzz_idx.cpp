// The IDX reader (Fashion-MNIST's format), plain or gzip-compressed, any rank it accepts.
#include "harness.hpp"
#include "vediff/io/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = vediff::fuzz::input_file(data, size, ".idx");
    vediff::fuzz::expect_named_errors([&] { (void)vediff::io::read_idx(path); });
    return 0;
}
