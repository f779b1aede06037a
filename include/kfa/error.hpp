#pragma once
#include <stdexcept>
#include <string>

namespace kfa {

/// Thrown for every invalid argument. Nothing has been written when it is thrown.
class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& what) : std::invalid_argument("kfa: " + what) {}
};

/// Thrown when the device fails to run a kernel (launch failure, out of memory): not the caller's
/// arguments but the machine's state. What was written is unspecified.
class LaunchError : public std::runtime_error {
 public:
  explicit LaunchError(const std::string& what) : std::runtime_error("kfa: " + what) {}
};

}  // namespace kfa
