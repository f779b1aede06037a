#pragma once
#include <stdexcept>
#include <string>

namespace kfa {

/// Thrown for every invalid argument. Nothing has been written when it is thrown.
class Error : public std::invalid_argument {
 public:
  explicit Error(const std::string& what) : std::invalid_argument("kfa: " + what) {}
};

}  // namespace kfa
