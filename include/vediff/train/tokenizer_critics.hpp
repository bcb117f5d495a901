#pragma once
// The perceptual and adversarial parts of LDM's tokenizer loss (taming-transformers'
// LPIPSWithDiscriminator), run by the tokenizer trainer around its own step:
//
//   generator(...)            after the loss policies, before the tokenizer's backward: adds to
//                             dx̂ the gradient of   w_p·s·LPIPS(x, x̂)  +  λ_adv·f·(−mean D(x̂))
//   train_discriminator(...)  one step of the discriminator on x and the (detached) x̂
//
// with s the reduction's scale (LDM adds the per-image LPIPS to every pixel of the L1 map before
// summing, so under per_image_sum s = C·H·W; under element_mean s = 1), λ_adv LDM's adaptive
// weight (loss/adversarial.hpp) from the gradients of both parts with respect to the decoder's
// conv_out weight, and f = 1 from step disc_start on, 0 before (LDM's adopt_weight).
//
// Unlike the loss policies (loss/tokenizer_loss.hpp), which are functions of the tokenizer's
// outputs, these own networks (a frozen LPIPS, a trained PatchGAN) and optimizer state. Before
// disc_start the discriminator is not run at all: LDM runs it with a factor of 0, which changes
// nothing but BatchNorm's running statistics (used only in evaluation mode).
//
// Differences from LDM, deliberate: the discriminator's step reuses the step's reconstruction
// (LDM runs the tokenizer's forward again after its update, with a new posterior draw), which
// saves one forward pass per step; and LDM's learned `logvar` of the L1 map is left out (LDM's
// optimizer never updates it, so it stays 0 and changes nothing).
//
// Under mpirun the discriminator's gradients are averaged over the ranks like the tokenizer's;
// each rank's BatchNorm uses its own batch (PyTorch DDP's default, not SyncBatchNorm), and the
// adaptive weight uses the rank's own gradients, as LDM under DDP does.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vediff/core/error.hpp"
#include "vediff/distributed/data_parallel.hpp"
#include "vediff/distributed/zero.hpp"
#include "vediff/io/safetensors.hpp"
#include "vediff/loss/adversarial.hpp"
#include "vediff/loss/reduction.hpp"
#include "vediff/models/lpips.hpp"
#include "vediff/models/patchgan_discriminator.hpp"
#include "vediff/nn/conv2d.hpp"
#include "vediff/optim/adamw.hpp"

namespace vediff::train {

struct critic_config {
    double perceptual_weight = 0;         // w_p; 0: no LPIPS (LDM: 1)
    std::string lpips_weights;            // a safetensors file from tools/convert_lpips.py, or "random"
    std::int64_t lpips_width_divisor = 1; // "random" only: a narrower VGG, for tests
    double disc_weight = 0;               // multiplies λ_adv; 0: no discriminator (LDM: 0.5)
    std::int64_t disc_start = 0;          // the first step with the adversarial term (LDM: 50001)
    std::string disc_loss = "hinge";      // hinge | vanilla
    std::int64_t disc_ndf = 64;           // the discriminator's first width
    // The discriminator's own AdamW, constant rate (LDM: Adam with the tokenizer's lr, betas (0.5, 0.9)).
    double disc_lr = 0;  // 0: the tokenizer's lr (the trainer resolves it)
    double disc_beta1 = 0.5, disc_beta2 = 0.9;

    bool perceptual() const { return perceptual_weight > 0; }
    bool adversarial() const { return disc_weight > 0; }

    void validate() const {
        if (!(perceptual_weight >= 0) || !(disc_weight >= 0))
            throw std::invalid_argument(fmt::format("critics: --perceptual-weight {} and --disc-weight {} must be ≥ 0", perceptual_weight,
                                                    disc_weight));
        if (perceptual() && lpips_weights.empty())
            throw std::invalid_argument("--perceptual-weight > 0 needs --lpips FILE (tools/convert_lpips.py makes it) or --lpips random");
        if (lpips_width_divisor < 1)
            throw std::invalid_argument(fmt::format("--lpips-width-divisor {}: must be ≥ 1", lpips_width_divisor));
        if (disc_start < 0) throw std::invalid_argument(fmt::format("--disc-start {}: must be ≥ 0", disc_start));
        if (disc_ndf < 1) throw std::invalid_argument(fmt::format("--disc-ndf {}: must be ≥ 1", disc_ndf));
        if (!(disc_lr >= 0)) throw std::invalid_argument(fmt::format("--disc-lr {}: must be ≥ 0 (0: the tokenizer's)", disc_lr));
        (void)loss::parse_discriminator_objective(disc_loss);
    }

    nlohmann::json to_json() const {
        return {{"perceptual_weight", perceptual_weight}, {"lpips_weights", lpips_weights}, {"lpips_width_divisor", lpips_width_divisor},
                {"disc_weight", disc_weight}, {"disc_start", disc_start}, {"disc_loss", disc_loss}, {"disc_ndf", disc_ndf},
                {"disc_lr", disc_lr}, {"disc_beta1", disc_beta1}, {"disc_beta2", disc_beta2}};
    }
};

/// What the generator side added to the tokenizer's loss in one step.
struct generator_terms {
    double lpips = 0;        // mean LPIPS distance of the batch
    double perceptual = 0;   // its weighted share of the loss, w_p·s·lpips
    double g = 0;            // −mean D(x̂)
    double d_weight = 0;     // λ_adv (0 before disc_start)
    double adversarial = 0;  // its share of the loss, λ_adv·g
    double total() const { return perceptual + adversarial; }
};

/// What the discriminator's step measured.
struct discriminator_terms {
    bool trained = false;  // false before disc_start
    double d = 0;          // the discriminator's loss
    double logits_real = 0, logits_fake = 0;
};

template <class T, device D, class Comm>
class tokenizer_critics {
public:
    using discriminator_type = models::patchgan_discriminator<T, D>;
    using lpips_type = models::lpips<T, D>;
    using optimizer_type =
        std::conditional_t<Comm::is_distributed, distributed::sharded_adamw<Comm, T, D>, optim::adamw<T, D>>;

    /// image_channels: the tokenizer's; seed draws the discriminator's (and a random LPIPS's) weights.
    tokenizer_critics(const critic_config& c, std::int64_t image_channels, std::uint64_t seed, Comm& comm, bool zero1 = false)
        : config_(c), objective_(loss::parse_discriminator_objective(c.disc_loss)) {
        config_.validate();
        if (c.adversarial() && !(c.disc_lr > 0))
            throw std::invalid_argument(fmt::format("tokenizer critics: the discriminator's learning rate {} must be > 0", c.disc_lr));
        if (c.perceptual()) {
            if (image_channels != 3)
                throw std::invalid_argument(fmt::format("--perceptual-weight: LPIPS compares RGB images; these have {} channel(s) "
                                                        "(train on a 3-channel image folder, --channels 3)",
                                                        image_channels));
            lpips_ = std::make_unique<lpips_type>(seed ^ 0x6c70697073ULL, c.lpips_weights == "random" ? c.lpips_width_divisor : 1);
            if (c.lpips_weights != "random") io::load_state_dict(c.lpips_weights, *lpips_);
            else make_heads_non_negative(*lpips_);
        }
        if (c.adversarial()) {
            disc_ = std::make_unique<discriminator_type>(models::patchgan_config{.in_channels = image_channels, .ndf = c.disc_ndf},
                                                          seed ^ 0x64697363ULL);
            parallel_ = std::make_unique<distributed::data_parallel<Comm, discriminator_type>>(comm, *disc_);
            const optim::adamw_config adam{.lr = c.disc_lr, .beta1 = c.disc_beta1, .beta2 = c.disc_beta2, .eps = 1e-8, .weight_decay = 0};
            if constexpr (Comm::is_distributed) opt_ = std::make_unique<optimizer_type>(*disc_, adam, comm, zero1);
            else opt_ = std::make_unique<optimizer_type>(*disc_, adam);
            parallel_->broadcast_parameters(*disc_);
        }
    }

    const critic_config& config() const { return config_; }
    bool active() const { return lpips_ || disc_; }
    discriminator_type* discriminator() { return disc_.get(); }
    lpips_type* perceptual_network() { return lpips_.get(); }
    bool adversarial_at(std::int64_t step) const { return disc_ && step >= config_.disc_start; }

    /// Adds the perceptual and adversarial gradients to dx_hat, which holds the reconstruction
    /// term's gradient on entry. last_layer is the decoder's conv_out after its forward. x and
    /// x_hat must live until the tokenizer's backward has run.
    template <precision_policy P>
    generator_terms generator(const tensor_view<T, D>& x, const tensor_view<T, D>& x_hat, const tensor_view<T, D>& dx_hat,
                              const nn::conv2d<T, D, P>& last_layer, std::int64_t step, loss::reduction mode) {
        require_same_shape("tokenizer critics (x vs x_hat)", x, x_hat);
        require_same_shape("tokenizer critics (x_hat vs its gradient)", x_hat, dx_hat);
        generator_terms r;
        const double n = double(x.dim(0));
        if (lpips_) {
            const double scale = mode == loss::reduction::per_image_sum ? double(x.numel()) / n : 1.0;
            const auto distance = lpips_->forward(x_hat, x);
            double sum = 0;
            for (const auto v : distance.to_vector()) sum += double(v);
            r.lpips = sum / n;
            r.perceptual = config_.perceptual_weight * scale * r.lpips;
            const auto ddistance = tensor<T, D>::full(distance.shape(), T(config_.perceptual_weight * scale / n));
            const auto dx = lpips_->backward(ddistance.view());
            lpips_->forget();  // its activations are spent: not held through the tokenizer's backward
            ops::axpy(dx_hat, dx.view());
        }
        if (adversarial_at(step)) {
            disc_->train(true);
            const auto logits = disc_->forward(x_hat);
            const auto g = loss::hinge_generator_loss(logits.view());
            const auto dx_g = disc_->backward(g.d_fake.view());  // the discriminator's gradients are cleared before its step
            disc_->forget();
            const auto rec_grad = last_layer.weight_gradient(dx_hat);
            const auto g_grad = last_layer.weight_gradient(dx_g.view());
            r.g = g.value;
            r.d_weight = loss::adaptive_weight(rec_grad.view(), g_grad.view(), config_.disc_weight);
            r.adversarial = r.d_weight * r.g;
            ops::axpy(dx_hat, dx_g.view(), T(r.d_weight));
        }
        return r;
    }

    /// One step of the discriminator on real images x and reconstructions x_hat (treated as
    /// constants), from step disc_start on; before, nothing.
    discriminator_terms train_discriminator(const tensor_view<T, D>& x, const tensor_view<T, D>& x_hat, std::int64_t step) {
        discriminator_terms r;
        if (!adversarial_at(step)) return r;
        distributed::release_optimizer_state(*opt_);
        opt_->zero_grad();
        disc_->train(true);
        // The two halves of the loss are separable: each pass's backward runs before the next
        // forward, which overwrites what the first kept. BatchNorm sees each batch alone, as in
        // taming's two discriminator calls.
        const auto real_logits = disc_->forward(x);
        const auto real = loss::discriminator_real_term(objective_, real_logits.view());
        (void)disc_->backward(real.gradient.view());
        const auto fake_logits = disc_->forward(x_hat);
        const auto fake = loss::discriminator_fake_term(objective_, fake_logits.view());
        (void)disc_->backward(fake.gradient.view());
        disc_->forget();
        parallel_->reduce_gradients(*disc_, step);
        opt_->step();
        r.trained = true;
        r.d = real.value + fake.value;
        r.logits_real = real.mean_logit;
        r.logits_fake = fake.mean_logit;
        return r;
    }

    /// The discriminator's weights, BatchNorm statistics and optimizer state, as checkpoint tensors
    /// ("discriminator.main.0.weight", …, "discriminator_optimizer.<its state names>").
    template <class F>
    void for_each_state(F&& f) {
        if (!disc_) return;
        disc_->for_each_parameter([&](const std::string& name, nn::parameter<T, D>& p) { f("discriminator." + name, p.value); },
                                  std::string{});
        opt_->for_each_state([&](const std::string& name, tensor<T, D>& t) { f("discriminator_optimizer." + name, t); });
    }
    /// After a checkpoint was loaded at `step`: the optimizer's step count (one update per step
    /// from disc_start on) and the loaded state made every rank's.
    void after_load(std::int64_t step) {
        if (!disc_) return;
        opt_->set_step_count(std::max<std::int64_t>(0, step - config_.disc_start));
        distributed::adopt_optimizer_state(*opt_);
        parallel_->broadcast_parameters(*disc_);
    }
    void gather_state() {
        if (opt_) distributed::gather_optimizer_state(*opt_);
    }
    void release_state() {
        if (opt_) distributed::release_optimizer_state(*opt_);
    }

private:
    // A random LPIPS with PyTorch's default init has heads of either sign, and its "distance" can
    // be negative: minimizing it would push the images apart. The lpips package keeps its heads
    // non-negative while it trains them (clamp_weights); a random network gets |w| likewise.
    static void make_heads_non_negative(lpips_type& net) {
        for (auto& head : net.lin) {
            auto w = head.weight.value.to_vector();
            for (auto& v : w) v = v < T(0) ? -v : v;
            head.weight.value = tensor<T, D>::from_host(head.weight.value.shape(), std::span<const T>(w));
        }
    }

    critic_config config_;
    loss::discriminator_objective objective_;
    std::unique_ptr<lpips_type> lpips_;
    std::unique_ptr<discriminator_type> disc_;
    std::unique_ptr<distributed::data_parallel<Comm, discriminator_type>> parallel_;
    std::unique_ptr<optimizer_type> opt_;
};

/// The tokenizer's optimizer and the critics' state as one, for save_checkpoint/load_checkpoint:
/// train_state.safetensors then holds both (model.safetensors stays the tokenizer alone).
template <class Optimizer, class Critics>
struct optimizer_with_critics {
    using value_type = typename Optimizer::value_type;
    using device_type = typename Optimizer::device_type;
    Optimizer& optimizer;
    Critics& critics;

    template <class F>
    void for_each_state(F&& f) {
        optimizer.for_each_state(f);
        critics.for_each_state(f);
    }
    std::int64_t step_count() const { return optimizer.step_count(); }
    void set_step_count(std::int64_t n) { optimizer.set_step_count(n); }
};

} // namespace vediff::train
