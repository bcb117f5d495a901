#pragma once
// Softmax cross-entropy of logits (B, K) against integer class labels (B) (std::int32_t, on the
// logits' device), averaged over the batch as F.cross_entropy(logits, labels); its gradient
// (softmax − onehot)/B; and argmax / accuracy for classifier evaluation.
#include <cstdint>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

namespace detail {
template <class T, device D>
void check_cross_entropy(const char* op, const tensor_view<T, D>& logits, const tensor_view<std::int32_t, D>& labels) {
    if (logits.rank() != 2 || labels.rank() != 1 || labels.dim(0) != logits.dim(0) || logits.dim(1) == 0)
        throw shape_error(fmt::format("{}: logits {} and labels {} do not form (B, K) and (B)", op, logits.shape(),
                                      labels.shape()));
    const auto bad = cross_entropy_kernels<D>::first_invalid(labels.data(), labels.dim(0), logits.dim(1));
    if (bad >= 0)
        throw shape_error(fmt::format("{}: label {} of row {} is out of range for logits {}", op,
                                      cross_entropy_kernels<D>::label_at(labels.data(), bad), bad, logits.shape()));
}
} // namespace detail

/// Mean over the batch of −log softmax(logits)[label], a rank-0 tensor.
template <class T, device D>
tensor<T, D> cross_entropy(const tensor_view<T, D>& logits, const tensor_view<std::int32_t, D>& labels) {
    detail::check_cross_entropy("cross_entropy", logits, labels);
    tensor<T, D> loss(tensor_shape{});
    cross_entropy_kernels<D>::forward(loss.data(), logits.data(), labels.data(), logits.dim(0), logits.dim(1));
    return loss;
}

/// dlogits = dloss · (softmax(logits) − onehot(labels)) / B; dloss is the gradient of the loss
/// (1 when it is the objective itself).
template <class T, device D>
tensor<T, D> cross_entropy_backward(const tensor_view<T, D>& logits, const tensor_view<std::int32_t, D>& labels,
                                    T dloss = T(1)) {
    detail::check_cross_entropy("cross_entropy_backward", logits, labels);
    tensor<T, D> d(logits.shape());
    cross_entropy_kernels<D>::backward(d.data(), logits.data(), labels.data(), logits.dim(0), logits.dim(1), dloss);
    return d;
}

/// The predicted class of each row (B, K) → (B); ties go to the lowest index.
template <class T, device D>
tensor<std::int32_t, D> argmax(const tensor_view<T, D>& logits) {
    require_rank("argmax", logits, 2, "logits");
    if (logits.dim(1) == 0) throw shape_error(fmt::format("argmax: logits {} have no classes", logits.shape()));
    tensor<std::int32_t, D> out(tensor_shape{logits.dim(0)});
    cross_entropy_kernels<D>::argmax(out.data(), logits.data(), logits.dim(0), logits.dim(1));
    return out;
}

/// Fraction of rows whose argmax equals the label.
template <class T, device D>
double accuracy(const tensor_view<T, D>& logits, const tensor_view<std::int32_t, D>& labels) {
    detail::check_cross_entropy("accuracy", logits, labels);
    const auto pred = argmax(logits);
    if (labels.dim(0) == 0) return 0.0;
    return double(cross_entropy_kernels<D>::count_equal(pred.data(), labels.data(), labels.dim(0))) / double(labels.dim(0));
}

} // namespace vediff::ops
