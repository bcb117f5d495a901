// The safetensors reader on arbitrary bytes: header JSON, offsets, dtypes, shapes and the checksum
// path, in read and map access, then every tensor converted to float and to int32 (labels).
#include "harness.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = vediff::fuzz::input_file(data, size, ".safetensors");
    for (const auto access : {vediff::io::safetensors_access::read, vediff::io::safetensors_access::map}) {
        vediff::fuzz::expect_named_errors([&] {
            const vediff::io::safetensors_file f(path, access);
            for (const auto& name : f.names()) {
                vediff::fuzz::expect_named_errors([&] { (void)f.get<float>(name); });
                vediff::fuzz::expect_named_errors([&] { (void)f.get<std::int32_t>(name); });
                vediff::fuzz::expect_named_errors([&] { (void)f.view<float>(name); });
            }
        });
    }
    return 0;
}
