#pragma once
// Reading run configurations from JSON without silent conversions. nlohmann's get_to converts any
// number to any arithmetic type with a static_cast: 3.7 read into an integer field becomes 3, and
// 1e118 is undefined behaviour (found by tests/fuzz/fuzz_run_config). VEDIFF_JSON_FIELDS(Type,
// fields...) writes to_json as NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE does, and a from_json that takes
// integers only from JSON integers in the field's range, reals only from numbers, strings from
// strings and booleans from booleans; anything else is a std::invalid_argument naming the field
// and the value. A missing field throws nlohmann's out_of_range naming it, as before.
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace vediff {

namespace detail {

template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};

} // namespace detail

/// Converts v into out, exactly; `name` is the field's name in errors.
template <class T>
void strict_json_convert(const nlohmann::json& v, T& out, const std::string& name) {
    const auto bad = [&](const char* expected) {
        throw std::invalid_argument(fmt::format("configuration field '{}': {} is not {}", name, v.dump(), expected));
    };
    if constexpr (std::is_same_v<T, bool>) {
        if (!v.is_boolean()) bad("true or false");
        out = v.get<bool>();
    } else if constexpr (std::is_integral_v<T>) {
        if (!v.is_number_integer()) bad("an integer");
        if (v.is_number_unsigned()) {
            const auto u = v.get<std::uint64_t>();
            if (u > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) bad("an integer in range");
            out = static_cast<T>(u);
        } else {
            const auto i = v.get<std::int64_t>();
            if constexpr (std::is_unsigned_v<T>) {
                if (i < 0) bad("a non-negative integer");
            } else {
                if (i < std::numeric_limits<T>::min() || i > std::numeric_limits<T>::max()) bad("an integer in range");
            }
            out = static_cast<T>(i);
        }
    } else if constexpr (std::is_floating_point_v<T>) {
        if (!v.is_number()) bad("a number");
        out = v.get<T>();
    } else if constexpr (std::is_same_v<T, std::string>) {
        if (!v.is_string()) bad("a string");
        out = v.get<std::string>();
    } else if constexpr (detail::is_vector<T>::value) {
        if (!v.is_array()) bad("an array");
        T values(v.size());
        for (std::size_t i = 0; i < v.size(); ++i) strict_json_convert(v[i], values[i], fmt::format("{}[{}]", name, i));
        out = std::move(values);
    } else {
        v.get_to(out);  // a nested configuration: its own from_json
    }
}

/// The field `name` of object j into out (strict_json_convert); nlohmann's out_of_range when missing.
template <class T>
void strict_json_field(const nlohmann::json& j, const char* name, T& out) {
    strict_json_convert(j.at(name), out, name);
}

} // namespace vediff

#define VEDIFF_JSON_FROM_STRICT(v1) ::vediff::strict_json_field(nlohmann_json_j, #v1, nlohmann_json_t.v1);

/// to_json and a strict from_json (see above) of a struct's fields, at namespace scope of the type.
#define VEDIFF_JSON_FIELDS(Type, ...)                                                                                         \
    inline void to_json(nlohmann::json& nlohmann_json_j, const Type& nlohmann_json_t) {                                      \
        NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_TO, __VA_ARGS__))                                             \
    }                                                                                                                         \
    inline void from_json(const nlohmann::json& nlohmann_json_j, Type& nlohmann_json_t) {                                    \
        NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(VEDIFF_JSON_FROM_STRICT, __VA_ARGS__))                                      \
    }
