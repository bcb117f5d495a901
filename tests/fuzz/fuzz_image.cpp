// Image decoding as data::image_folder and the streaming loader do it: read_image (libjpeg-turbo,
// libpng) to 3 channels and to 1, then ADM's center crop to 32 pixels.
#include "harness.hpp"
#include "vediff/backend/cpu.hpp"
#include "vediff/data/center_crop.hpp"
#include "vediff/io/image.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto path = vediff::fuzz::input_file(data, size, ".img");
    for (const int channels : {3, 1}) {
        vediff::fuzz::expect_named_errors([&] {
            const auto img = vediff::io::read_image(path, channels);
            (void)vediff::data::adm_center_crop(img, 32);
        });
    }
    return 0;
}
