// Sums computed over the ranges of an at::parallel_for, added up in the order of the ranges (not of the
// threads that finished them): the total is the same from run to run, and a call from inside another
// parallel region (where the thread numbers are the outer region's) is still correct.
#pragma once

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

template <typename T>
class PartialSums {
 public:
  // The sums of the range starting at `first` (each range adds once).
  void add(int64_t first, std::vector<T> sums) {
    std::lock_guard<std::mutex> lock(mutex_);
    ranges_.emplace_back(first, std::move(sums));
  }

  // Adds every range's sums, in range order, to out[0 .. size).
  template <typename Out>
  void sum_into(Out* out) {
    std::sort(ranges_.begin(), ranges_.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& range : ranges_) {
      for (size_t i = 0; i < range.second.size(); ++i) out[i] += range.second[i];
    }
  }

 private:
  std::mutex mutex_;
  std::vector<std::pair<int64_t, std::vector<T>>> ranges_;
};
