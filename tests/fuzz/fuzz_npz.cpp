// The .npz reader (libzip + the .npy header parser): every member's header, then its data as
// float and as bytes (reference statistics and ADM sample batches).
#include "harness.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/npz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = vediff::fuzz::input_file(data, size, ".npz");
    vediff::fuzz::expect_named_errors([&] {
        const vediff::io::npz_file f(path);
        for (const auto& name : f.names()) {
            vediff::fuzz::expect_named_errors([&] { (void)f.header(name); });
            vediff::fuzz::expect_named_errors([&] { (void)f.get<float>(name); });
            vediff::fuzz::expect_named_errors([&] { (void)f.get<std::uint8_t>(name); });
        }
    });
    return 0;
}
