#pragma once
// The tokenizer loss, composed at compile time from term policies:
//     tokenizer_loss<reconstruction<l1>, variance_expansion, magnitude_regularizer> loss;
//     auto r = loss.evaluate({x, x_hat, post.mean, post.logvar, z});
// A policy is a type with `static constexpr std::string_view name`, a `config` of its weights and
// `double accumulate(const tokenizer_outputs<T, D>&, tokenizer_gradients<T, D>&, reduction) const`,
// which adds its gradients and returns its value. Adding a term is writing one policy. One
// reduction (reduction.hpp) applies to every term.
#include <array>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vediff/loss/latent_stats.hpp"
#include "vediff/loss/reduction.hpp"
#include "vediff/loss/tokenizer_outputs.hpp"
#include "vediff/ops/loss.hpp"

namespace vediff::loss {

template <class P>
concept loss_term = requires(const P& p, const tokenizer_outputs<float, cpu>& out, tokenizer_gradients<float, cpu>& g,
                             reduction r) {
    { P::name } -> std::convertible_to<std::string_view>;
    typename P::config;
    { p.accumulate(out, g, r) } -> std::same_as<double>;
};

/// Each term's value, in policy order, and the reduction they were computed with.
struct loss_breakdown {
    std::vector<std::pair<std::string_view, double>> terms;  // (policy name, value)
    reduction mode = reduction::per_image_sum;

    std::string_view reduction_name() const { return to_string(mode); }
    auto begin() const { return terms.begin(); }
    auto end() const { return terms.end(); }
    std::size_t size() const { return terms.size(); }
    const std::pair<std::string_view, double>& operator[](std::size_t i) const { return terms[i]; }
    /// The value of the term `name`; throws std::out_of_range when there is none.
    double at(std::string_view name) const {
        for (const auto& [n, v] : terms)
            if (n == name) return v;
        throw std::out_of_range(fmt::format("loss breakdown: no term named '{}'", name));
    }
};

template <class T = float, device D = cpu>
struct tokenizer_loss_result {
    double total = 0;                  // Σ of the breakdown
    loss_breakdown breakdown;
    tokenizer_gradients<T, D> gradients;
    latent_statistics latent;          // of this batch
    std::optional<std::size_t> nonfinite_index;  // first term whose value or gradient is NaN/Inf

    bool finite() const { return !nonfinite_index.has_value(); }
    /// The name of the first term (in policy order) whose value, or a gradient after adding its
    /// share, is NaN or infinite; training stops on it and names it.
    std::optional<std::string_view> first_nonfinite_term() const {
        if (!nonfinite_index) return std::nullopt;
        return breakdown.terms[*nonfinite_index].first;
    }
};

template <loss_term... Policies>
struct tokenizer_loss {
    static_assert(sizeof...(Policies) > 0, "tokenizer_loss needs at least one term");
    static_assert([] {
        const std::array<std::string_view, sizeof...(Policies)> names{Policies::name...};
        for (std::size_t i = 0; i < names.size(); ++i)
            for (std::size_t j = i + 1; j < names.size(); ++j)
                if (names[i] == names[j]) return false;
        return true;
    }(), "tokenizer_loss: two terms share a name; the breakdown would be ambiguous");

    std::tuple<Policies...> terms;
    reduction mode = reduction::per_image_sum;

    static constexpr std::array<std::string_view, sizeof...(Policies)> names() { return {Policies::name...}; }

    /// The policy of type P (to read or change its config).
    template <class P>
    P& term() { return std::get<P>(terms); }
    template <class P>
    const P& term() const { return std::get<P>(terms); }

    /// Total, breakdown, gradients (zero-filled, then each term adds its share) and latent
    /// statistics of one batch. T and D default to float and cpu so that a braced list
    /// `evaluate({x, x_hat, mean, logvar, z})` compiles; other types pass tokenizer_outputs<T, D>.
    template <class T = float, device D = cpu>
    tokenizer_loss_result<T, D> evaluate(const tokenizer_outputs<T, D>& out) const {
        check(out);
        tokenizer_loss_result<T, D> r;
        r.breakdown.mode = mode;
        r.breakdown.terms.reserve(sizeof...(Policies));
        r.gradients = tokenizer_gradients<T, D>::zeros_like(out);
        std::apply([&](const auto&... p) { (add_term(p, out, r), ...); }, terms);
        r.latent = summarize_latents(out.logvar, out.z);
        return r;
    }
    template <class T, device D>
    tokenizer_loss_result<T, D> evaluate(const tensor_view<T, D>& x, const tensor_view<T, D>& x_hat, const tensor_view<T, D>& mean,
                                         const tensor_view<T, D>& logvar, const tensor_view<T, D>& z) const {
        return evaluate(tokenizer_outputs<T, D>{x, x_hat, mean, logvar, z});
    }

private:
    template <class P, class T, device D>
    void add_term(const P& p, const tokenizer_outputs<T, D>& out, tokenizer_loss_result<T, D>& r) const {
        const double value = p.accumulate(out, r.gradients, mode);
        r.breakdown.terms.emplace_back(P::name, value);
        r.total += value;
        // Gradients are checked too: a term can be finite in double while its float gradient
        // overflows (exp(|z| − τ) for a runaway latent). Once one term is flagged, later ones
        // would only inherit its NaN, so the scan stops.
        if (!r.nonfinite_index && (!std::isfinite(value) || nonfinite(r.gradients)))
            r.nonfinite_index = r.breakdown.terms.size() - 1;
    }

    template <class T, device D>
    static bool nonfinite(const tokenizer_gradients<T, D>& g) {
        return ops::count_nonfinite(g.dx_hat.view()) + ops::count_nonfinite(g.dmean.view()) +
                   ops::count_nonfinite(g.dlogvar.view()) + ops::count_nonfinite(g.dz.view()) >
               0;
    }

    template <class T, device D>
    static void check(const tokenizer_outputs<T, D>& out) {
        const std::pair<const char*, const tensor_view<T, D>*> fields[] = {
            {"x", &out.x}, {"x_hat", &out.x_hat}, {"mean", &out.mean}, {"logvar", &out.logvar}, {"z", &out.z}};
        for (const auto& [what, t] : fields)
            if (!t->defined() && t->numel() != 0)
                throw shape_error(fmt::format("tokenizer_loss: output {} is missing (no storage)", what));
        if (!(out.x.shape() == out.x_hat.shape()))
            throw shape_error(fmt::format("tokenizer_loss: x {} and x_hat {} differ", out.x.shape(), out.x_hat.shape()));
        if (!(out.mean.shape() == out.logvar.shape()) || !(out.mean.shape() == out.z.shape()))
            throw shape_error(fmt::format("tokenizer_loss: mean {}, logvar {} and z {} must have one shape", out.mean.shape(),
                                          out.logvar.shape(), out.z.shape()));
        if (out.x.rank() < 1 || out.z.rank() < 2 || out.x.dim(0) != out.z.dim(0) || out.x.dim(0) == 0)
            throw shape_error(fmt::format("tokenizer_loss: images {} and latents {} must share a non-empty batch (B, ...) "
                                          "and (B, C, ...)",
                                          out.x.shape(), out.z.shape()));
    }
};

} // namespace vediff::loss
