#pragma once
// Error types of vediff. Every message names the operation (or file, or tensor) and the cause.
#include <stdexcept>
#include <string>

namespace vediff {

/// Thrown when tensor shapes do not fit an operation; the message names the op and the shapes.
struct shape_error : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

/// Thrown when a file cannot be read or written, or its contents are malformed.
struct io_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// Thrown when a computation produces NaN or Inf where a finite value is required.
struct numeric_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

} // namespace vediff
