#pragma once
// How a loss term turns its per-element values into one number. The tokenizer loss follows the
// LDM / VA-VAE convention that the VE term was published against: a term is summed over the
// elements of one image (its pixels for reconstruction, its latent elements for the others) and
// averaged over the batch. element_mean (the mean over every element, PyTorch's default
// reduction) is offered for comparison; it changes the balance between pixel terms and latent
// terms by (latent elements)/(pixels), so it applies to all terms together, never to one.
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

#include "vediff/core/error.hpp"
#include "vediff/core/shape.hpp"

namespace vediff::loss {

enum class reduction {
    per_image_sum,  // Σ over one image's elements, mean over the batch (the default)
    element_mean,   // mean over every element of the batch
};

constexpr std::string_view to_string(reduction r) {
    return r == reduction::per_image_sum ? "per_image_sum" : "element_mean";
}

/// The reduction named s ("per_image_sum" or "element_mean"); throws std::invalid_argument.
inline reduction parse_reduction(std::string_view s) {
    if (s == "per_image_sum") return reduction::per_image_sum;
    if (s == "element_mean") return reduction::element_mean;
    throw std::invalid_argument(fmt::format("unknown loss reduction '{}' (expected per_image_sum or element_mean)", s));
}

/// What a term's elementwise sum over a tensor of shape s (batch first) is divided by: the batch
/// size for per_image_sum, the element count for element_mean. Throws shape_error naming the term
/// when that is zero or the tensor has no batch axis.
inline double reduction_divisor(std::string_view term, reduction r, const tensor_shape& s) {
    if (s.rank() < 1 || s.numel() == 0)
        throw shape_error(fmt::format("{}: cannot reduce an empty batch or a tensor without a batch axis, shape {}", term, s));
    return r == reduction::per_image_sum ? double(s[0]) : double(s.numel());
}

} // namespace vediff::loss
