#pragma once
// Arithmetic between a tensor x and a smaller operand b broadcast over some of x's axes.
//
// The rule, one for every op here: b has x's rank, and each extent of b equals x's or is 1
// (PyTorch broadcasting with the unsqueeze written out). Callers insert the 1s with a free
// reshape of the view:
//   per-channel bias      b (C)    over x (B, C, H, W): b.reshape({1, C, 1, 1})
//   per-sample channel    b (B, C) over x (B, C, H, W): b.reshape({B, C, 1, 1})
//   DiT modulate / gate   b (B, D) over x (B, N, D):    b.reshape({B, 1, D})   (= b[:, None])
// Backward returns dx and the gradient of b, summed over the broadcast axes (sum_to).
#include <string>

#include <fmt/format.h>

#include "vediff/core/kernels.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::ops {

/// Throws shape_error naming the op and both shapes unless `small` broadcasts to `full`.
inline void require_broadcastable(const char* op, const tensor_shape& full, const tensor_shape& small) {
    bool ok = full.rank() == small.rank();
    for (int a = 0; ok && a < full.rank(); ++a) ok = small[a] == full[a] || small[a] == 1;
    if (!ok)
        throw shape_error(fmt::format("{}: shape {} does not broadcast to {} (needs equal rank, each extent equal or 1)",
                                      op, small, full));
}

/// b repeated along its extent-1 axes up to `shape`.
template <class T, device D>
tensor<T, D> broadcast_to(const tensor_view<T, D>& b, const tensor_shape& shape) {
    require_broadcastable("broadcast_to", shape, b.shape());
    tensor<T, D> out(shape);
    broadcast_kernels<D>::expand(out.data(), b.data(), shape, b.shape());
    return out;
}

/// x summed over the axes where `shape` has extent 1: the adjoint of broadcast_to, and the
/// gradient of a broadcast operand. Accumulates in double on the cpu.
template <class T, device D>
tensor<T, D> sum_to(const tensor_view<T, D>& x, const tensor_shape& shape) {
    require_broadcastable("sum_to", x.shape(), shape);
    tensor<T, D> out(shape);
    reduce_kernels<D>::sum_to(out.data(), x.data(), x.shape(), shape);
    return out;
}

template <class T, device D>
struct broadcast_grads {
    tensor<T, D> dx;  // shape of x
    tensor<T, D> db;  // shape of b
};

/// x + b, b broadcast over x.
template <class T, device D>
tensor<T, D> add_broadcast(const tensor_view<T, D>& x, const tensor_view<T, D>& b) {
    require_broadcastable("add_broadcast", x.shape(), b.shape());
    tensor<T, D> out(x.shape());
    broadcast_kernels<D>::add(out.data(), x.data(), b.data(), x.shape(), b.shape());
    return out;
}

/// dx = dy, db = sum_to(dy, b's shape).
template <class T, device D>
broadcast_grads<T, D> add_broadcast_backward(const tensor_view<T, D>& dy, const tensor_shape& b_shape) {
    require_broadcastable("add_broadcast_backward", dy.shape(), b_shape);
    return {tensor<T, D>::copy_of(dy), sum_to(dy, b_shape)};
}

/// x · b, b broadcast over x.
template <class T, device D>
tensor<T, D> mul_broadcast(const tensor_view<T, D>& x, const tensor_view<T, D>& b) {
    require_broadcastable("mul_broadcast", x.shape(), b.shape());
    tensor<T, D> out(x.shape());
    broadcast_kernels<D>::mul(out.data(), x.data(), b.data(), x.shape(), b.shape());
    return out;
}

/// dx = dy · b, db = sum_to(dy · x) (summed without forming dy · x).
template <class T, device D>
broadcast_grads<T, D> mul_broadcast_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x,
                                             const tensor_view<T, D>& b) {
    require_same_shape("mul_broadcast_backward", dy, x);
    require_broadcastable("mul_broadcast_backward", x.shape(), b.shape());
    tensor<T, D> db(b.shape());
    reduce_kernels<D>::sum_to_product(db.data(), dy.data(), x.data(), x.shape(), b.shape());
    return {mul_broadcast(dy, b), std::move(db)};
}

/// x + a · b with b broadcast over a (x and a of one shape): DiT's gated residual
/// x + gate · branch in one pass. Its backward is dx = dy and mul_broadcast_backward(dy, a, b).
template <class T, device D>
tensor<T, D> addcmul_broadcast(const tensor_view<T, D>& x, const tensor_view<T, D>& a, const tensor_view<T, D>& b) {
    require_same_shape("addcmul_broadcast", x, a);
    require_broadcastable("addcmul_broadcast", a.shape(), b.shape());
    tensor<T, D> out(x.shape());
    broadcast_kernels<D>::addcmul(out.data(), x.data(), a.data(), b.data(), x.shape(), b.shape());
    return out;
}

/// y += a · b in place, b broadcast over a (inference: the residual stream updated where it lies).
template <class T, device D>
void addcmul_broadcast_in_place(const tensor_view<T, D>& y, const tensor_view<T, D>& a, const tensor_view<T, D>& b) {
    require_same_shape("addcmul_broadcast_in_place", y, a);
    require_broadcastable("addcmul_broadcast_in_place", a.shape(), b.shape());
    broadcast_kernels<D>::addcmul(y.data(), y.data(), a.data(), b.data(), y.shape(), b.shape());
}

template <class T, device D>
struct modulate_grads {
    tensor<T, D> dx;      // shape of x
    tensor<T, D> dshift;  // shape of shift
    tensor<T, D> dscale;  // shape of scale
};

/// DiT's modulate: x · (1 + scale) + shift, with shift and scale of one broadcast shape
/// (for x (B, N, D) and adaLN chunks (B, D): pass shift.reshape({B, 1, D}), scale likewise).
template <class T, device D>
tensor<T, D> modulate(const tensor_view<T, D>& x, const tensor_view<T, D>& shift, const tensor_view<T, D>& scale) {
    require_same_shape("modulate (shift vs scale)", shift, scale);
    require_broadcastable("modulate", x.shape(), shift.shape());
    tensor<T, D> out(x.shape());
    broadcast_kernels<D>::modulate(out.data(), x.data(), shift.data(), scale.data(), x.shape(), shift.shape());
    return out;
}

/// x ← x · (1 + scale) + shift in place (inference: no copy of the normalized tokens).
template <class T, device D>
void modulate_in_place(const tensor_view<T, D>& x, const tensor_view<T, D>& shift, const tensor_view<T, D>& scale) {
    require_same_shape("modulate_in_place (shift vs scale)", shift, scale);
    require_broadcastable("modulate_in_place", x.shape(), shift.shape());
    broadcast_kernels<D>::modulate(x.data(), x.data(), shift.data(), scale.data(), x.shape(), shift.shape());
}

/// dx = dy · (1 + scale), dshift = sum_to(dy), dscale = sum_to(dy · x).
template <class T, device D>
modulate_grads<T, D> modulate_backward(const tensor_view<T, D>& dy, const tensor_view<T, D>& x,
                                       const tensor_view<T, D>& scale) {
    require_same_shape("modulate_backward", dy, x);
    require_broadcastable("modulate_backward", x.shape(), scale.shape());
    tensor<T, D> dx(x.shape());
    broadcast_kernels<D>::mul_one_plus(dx.data(), dy.data(), scale.data(), x.shape(), scale.shape());
    tensor<T, D> dscale(scale.shape());
    reduce_kernels<D>::sum_to_product(dscale.data(), dy.data(), x.data(), x.shape(), scale.shape());
    return {std::move(dx), sum_to(dy, scale.shape()), std::move(dscale)};
}

} // namespace vediff::ops
