#pragma once
// Reads the reference tensors written by tests/fixtures/fixture_io.py (values computed once with
// Debian's python3-torch by the scripts beside the fixtures).
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vediff/backend/cpu.hpp"
#include "vediff/core/tensor.hpp"

namespace vediff::testing {

struct fixture {
    std::map<std::string, std::pair<tensor_shape, std::vector<double>>> entries;

    /// The tensor `name` converted to T; throws when absent.
    template <class T = double>
    tensor<T, cpu> get(const std::string& name) const {
        auto it = entries.find(name);
        if (it == entries.end()) throw io_error(fmt::format("fixture: no tensor named '{}'", name));
        auto t = tensor<T, cpu>::empty(it->second.first);
        for (std::size_t i = 0; i < it->second.second.size(); ++i) t.data()[i] = static_cast<T>(it->second.second[i]);
        return t;
    }
    double scalar(const std::string& name) const { return get<double>(name).data()[0]; }
};

inline fixture load_fixture(const std::string& file_name) {
    const std::string path = std::string(VEDIFF_FIXTURE_DIR) + "/" + file_name;
    std::ifstream in(path);
    if (!in) throw io_error(fmt::format("fixture: cannot open {}", path));
    fixture f;
    std::string header, values;
    while (std::getline(in, header) && std::getline(in, values)) {
        std::istringstream hs(header), vs(values);
        std::string name;
        hs >> name;
        tensor_shape shape;
        std::int64_t d;
        while (hs >> d) shape.push_back(d);
        std::vector<double> v;
        v.reserve(static_cast<std::size_t>(shape.numel()));
        double x;
        while (vs >> x) v.push_back(x);
        if (static_cast<std::int64_t>(v.size()) != shape.numel())
            throw io_error(fmt::format("fixture {}: tensor '{}' has {} values for shape {}", path, name, v.size(), shape));
        f.entries.emplace(name, std::make_pair(shape, std::move(v)));
    }
    return f;
}

/// Max |a − b| / (atol + rtol·|b|) ≤ 1 elementwise, reported with the worst index.
template <class A, class B>
void check_close(const A& actual, const B& expected, double rtol, double atol, const std::string& what) {
    BOOST_REQUIRE_MESSAGE(actual.shape() == expected.shape(),
                          what << ": shape " << actual.shape().to_string() << " vs expected " << expected.shape().to_string());
    double worst = 0;
    std::int64_t worst_i = 0;
    for (std::int64_t i = 0; i < actual.numel(); ++i) {
        const double a = double(actual.data()[i]), b = double(expected.data()[i]);
        const double r = std::abs(a - b) / (atol + rtol * std::abs(b));
        if (!(r <= worst)) {
            worst = r;
            worst_i = i;
        }
    }
    BOOST_TEST(worst <= 1.0, what << ": element " << worst_i << " is " << double(actual.data()[worst_i]) << ", expected "
                                  << double(expected.data()[worst_i]) << " (ratio to tolerance " << worst << ")");
}

} // namespace vediff::testing
