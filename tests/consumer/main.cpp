// A downstream program: includes the umbrella header of the installed vediff and trains a tiny
// two-layer network for a few steps, checking that the loss falls.
#include <cstdio>

#include <vediff/vediff.hpp>

int main() {
    using namespace vediff;
    nn::sequential<nn::linear<>, nn::silu<>, nn::linear<>> net{nn::linear<>(4, 16, true, 1), nn::silu<>{}, nn::linear<>(16, 3, true, 2)};
    optim::adamw opt(net, {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0});
    auto x = tensor<float>::from_host({6, 4}, {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1});
    auto labels = tensor<std::int32_t>::from_host({6}, {0, 1, 2, 0, 1, 2});
    float first = 0, last = 0;
    for (int step = 0; step < 50; ++step) {
        opt.zero_grad();
        auto logits = net.forward(x);
        last = ops::cross_entropy(logits.view(), labels.view()).to_vector()[0];
        if (step == 0) first = last;
        (void)net.backward(ops::cross_entropy_backward(logits.view(), labels.view()));
        opt.step();
    }
    std::printf("loss %.4f -> %.4f\n", first, last);
    if (!(last < 0.5f * first)) return 1;
    std::printf("vediff consumer ok\n");
    return 0;
}
