#pragma once
// kfa::BlockMask: which (query block, key block) pairs of the score matrix are computed.
//
// Compressed-row form, per (batch or broadcast, head or broadcast, query block): the sorted list of
// "full" key blocks (computed whole) and of "partial" key blocks (computed under an element bitmask).
// Blocks in neither list are skipped: no loads, no arithmetic. The mask combines with Params'
// causal / window masks (an element is computed when both allow it).
//
// Block sizes must be multiples of 16; the portable kernel then uses tiles that divide them (at most
// 64), so every kernel tile lies inside one mask block. The mask lives in host memory; kfa copies it
// to an execution space's memory on first use and keeps that copy inside the BlockMask (shared by
// copies of the object), so repeated calls do not copy again.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "kfa/detail/feature_args.hpp"
#include "kfa/error.hpp"

namespace kfa {

/// What a mask is built for. batch / heads = 1 broadcast over the call's batch / heads.
struct BlockMaskShape {
  std::int64_t seqlen_q = 0, seqlen_k = 0;
  std::int64_t block_q = 64, block_k = 64;
  std::int64_t batch = 1, heads = 1;
};

class BlockMask {
 public:
  /// Element predicate allowed(batch, head, row, col) of from_element_mask.
  using ElementPredicate = std::function<bool(std::int64_t, std::int64_t, std::int64_t, std::int64_t)>;

  BlockMask() = default;

  /// From a dense block matrix [batch][heads][n_qblocks][n_kblocks] (row-major): nonzero = computed.
  static BlockMask from_blocks(const BlockMaskShape& shape, const std::vector<std::uint8_t>& blocks) {
    BlockMask m(shape);
    const std::int64_t nk = m.n_kblocks_;
    if (static_cast<std::int64_t>(blocks.size()) != m.rows() * nk)
      throw Error("BlockMask::from_blocks: the block matrix has " + std::to_string(blocks.size()) +
                  " entries, expected batch * heads * n_qblocks * n_kblocks = " + std::to_string(m.rows() * nk));
    for (std::int64_t r = 0; r < m.rows(); ++r) {
      for (std::int64_t kb = 0; kb < nk; ++kb)
        if (blocks[r * nk + kb]) m.col_idx_.push_back(static_cast<std::int32_t>(kb));
      m.row_ptr_.push_back(static_cast<std::int32_t>(m.col_idx_.size()));
      m.partial_row_ptr_.push_back(0);
    }
    m.finish();
    return m;
  }

  /// From an element predicate: blocks it allows entirely are full, blocks it allows in part are
  /// partial (with the predicate's bits), the others are skipped. Evaluates it on every element.
  static BlockMask from_element_mask(const BlockMaskShape& shape, const ElementPredicate& allowed) {
    BlockMask m(shape);
    const std::int64_t bq = shape.block_q, bk = shape.block_k;
    std::vector<std::uint32_t> bits(m.words_per_block_);
    for (std::int64_t mb = 0; mb < shape.batch; ++mb)
      for (std::int64_t mh = 0; mh < shape.heads; ++mh)
        for (std::int64_t qb = 0; qb < m.n_qblocks_; ++qb) {
          for (std::int64_t kb = 0; kb < m.n_kblocks_; ++kb) {
            std::fill(bits.begin(), bits.end(), 0u);
            std::int64_t in = 0, total = 0;
            for (std::int64_t i = qb * bq; i < std::min((qb + 1) * bq, shape.seqlen_q); ++i)
              for (std::int64_t j = kb * bk; j < std::min((kb + 1) * bk, shape.seqlen_k); ++j) {
                ++total;
                if (!allowed(mb, mh, i, j)) continue;
                ++in;
                const std::int64_t e = (i - qb * bq) * bk + (j - kb * bk);
                bits[e >> 5] |= 1u << (e & 31);
              }
            if (in == 0) continue;
            if (in == total) {
              m.col_idx_.push_back(static_cast<std::int32_t>(kb));
            } else {
              m.partial_col_idx_.push_back(static_cast<std::int32_t>(kb));
              m.partial_bits_.insert(m.partial_bits_.end(), bits.begin(), bits.end());
            }
          }
          m.row_ptr_.push_back(static_cast<std::int32_t>(m.col_idx_.size()));
          m.partial_row_ptr_.push_back(static_cast<std::int32_t>(m.partial_col_idx_.size()));
        }
    m.finish();
    return m;
  }

  /// From compressed rows given directly (FlexAttention-style counts + indices, as prefix sums);
  /// checked for consistency. partial_bits holds one bitmask per partial entry (see feature_args.hpp).
  static BlockMask from_compressed(const BlockMaskShape& shape, std::vector<std::int32_t> row_ptr,
                                   std::vector<std::int32_t> col_idx, std::vector<std::int32_t> partial_row_ptr = {},
                                   std::vector<std::int32_t> partial_col_idx = {},
                                   std::vector<std::uint32_t> partial_bits = {}) {
    BlockMask m(shape);
    if (partial_row_ptr.empty()) partial_row_ptr.assign(m.rows() + 1, 0);
    m.row_ptr_ = std::move(row_ptr);
    m.col_idx_ = std::move(col_idx);
    m.partial_row_ptr_ = std::move(partial_row_ptr);
    m.partial_col_idx_ = std::move(partial_col_idx);
    m.partial_bits_ = std::move(partial_bits);
    m.finish();
    return m;
  }

  // ---- patterns (diagonal aligned to the bottom-right corner, like Params::causal) ----

  /// Query i sees keys j <= i + seqlen_k - seqlen_q.
  static BlockMask causal(const BlockMaskShape& shape) { return sliding_window(shape, -1, 0); }

  /// Query i sees keys within `left` before and `right` after its diagonal (-1 = unbounded).
  static BlockMask sliding_window(const BlockMaskShape& shape, std::int64_t left, std::int64_t right) {
    if (left < -1 || right < -1) throw Error("BlockMask::sliding_window: left / right must be >= 0, or -1 for unbounded");
    const std::int64_t shift = shape.seqlen_k - shape.seqlen_q;
    return from_element_mask(shape, [=](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
      return (left < 0 || j >= i + shift - left) && (right < 0 || j <= i + shift + right);
    });
  }

  /// Longformer-style: a local window of `window` keys on each side of the diagonal, plus
  /// `global_tokens` leading tokens that see every key and are seen by every query.
  static BlockMask local_global(const BlockMaskShape& shape, std::int64_t window, std::int64_t global_tokens) {
    if (window < 0 || global_tokens < 0) throw Error("BlockMask::local_global: window and global_tokens must be >= 0");
    const std::int64_t shift = shape.seqlen_k - shape.seqlen_q;
    return from_element_mask(shape, [=](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
      const std::int64_t d = i + shift - j;
      return (d <= window && -d <= window) || i < global_tokens || j < global_tokens;
    });
  }

  /// Sparse-Transformer "strided" pattern: the `local` keys before the diagonal (inclusive), plus
  /// every key j with (j + 1) % stride == 0 up to the diagonal (summary columns); causal.
  static BlockMask strided(const BlockMaskShape& shape, std::int64_t local, std::int64_t stride) {
    if (local < 0 || stride < 1) throw Error("BlockMask::strided: local must be >= 0 and stride >= 1");
    const std::int64_t shift = shape.seqlen_k - shape.seqlen_q;
    return from_element_mask(shape, [=](std::int64_t, std::int64_t, std::int64_t i, std::int64_t j) {
      const std::int64_t d = i + shift - j;
      return d >= 0 && (d <= local || (j + 1) % stride == 0);
    });
  }

  /// BigBird-like, at block granularity: `window_blocks` key blocks each side of the diagonal block,
  /// `global_blocks` leading blocks in both directions, and `random_blocks` random key blocks per
  /// query block (a fixed function of `seed`).
  static BlockMask bigbird(const BlockMaskShape& shape, std::int64_t window_blocks, std::int64_t global_blocks,
                           std::int64_t random_blocks, std::uint64_t seed = 0) {
    if (window_blocks < 0 || global_blocks < 0 || random_blocks < 0)
      throw Error("BlockMask::bigbird: block counts must be >= 0");
    BlockMask probe(shape);
    const std::int64_t nq = probe.n_qblocks_, nk = probe.n_kblocks_;
    std::vector<std::uint8_t> blocks(probe.rows() * nk, 0);
    std::mt19937_64 gen(seed);
    for (std::int64_t r = 0; r < probe.rows(); ++r) {
      const std::int64_t qb = r % nq;
      // the diagonal block of the query block's last row
      const std::int64_t last_row = std::min((qb + 1) * shape.block_q, shape.seqlen_q) - 1;
      const std::int64_t diag = std::clamp<std::int64_t>((last_row + shape.seqlen_k - shape.seqlen_q) / shape.block_k, 0, nk - 1);
      std::uint8_t* row = &blocks[r * nk];
      for (std::int64_t kb = 0; kb < nk; ++kb)
        row[kb] = (kb - diag <= window_blocks && diag - kb <= window_blocks) || kb < global_blocks || qb < global_blocks;
      for (std::int64_t n = 0; n < random_blocks; ++n) row[gen() % nk] = 1;
    }
    return from_blocks(shape, blocks);
  }

  // ---- inspection ----
  const BlockMaskShape& shape() const { return shape_; }
  std::int64_t n_qblocks() const { return n_qblocks_; }
  std::int64_t n_kblocks() const { return n_kblocks_; }
  std::int64_t full_blocks() const { return static_cast<std::int64_t>(col_idx_.size()); }
  std::int64_t partial_blocks() const { return static_cast<std::int64_t>(partial_col_idx_.size()); }
  /// Fraction of (query block, key block) pairs that are computed (full or partial).
  double density() const {
    const double total = double(rows()) * double(n_kblocks_);
    return total > 0 ? double(full_blocks() + partial_blocks()) / total : 0.0;
  }
  bool empty() const { return row_ptr_.empty(); }

  /// Pointers into this object's host arrays.
  detail::BlockSparseSpec host_spec() const {
    detail::BlockSparseSpec s;
    if (empty()) return s;
    s.row_ptr = row_ptr_.data();
    s.col_idx = col_idx_.data();
    s.partial_row_ptr = partial_row_ptr_.data();
    s.partial_col_idx = partial_col_idx_.data();
    s.partial_bits = partial_bits_.data();
    s.col_ptr = col_ptr_.data();
    s.row_idx = row_idx_.data();
    s.partial_col_ptr = partial_col_ptr_.data();
    s.partial_row_idx = partial_row_idx_.data();
    s.col_partial_entry = col_partial_entry_.data();
    s.block_state = block_state_.data();
    s.block_q = static_cast<std::int32_t>(shape_.block_q);
    s.block_k = static_cast<std::int32_t>(shape_.block_k);
    s.n_qblocks = static_cast<std::int32_t>(n_qblocks_);
    s.n_kblocks = static_cast<std::int32_t>(n_kblocks_);
    s.batch = static_cast<std::int32_t>(shape_.batch);
    s.heads = static_cast<std::int32_t>(shape_.heads);
    s.words_per_block = static_cast<std::int32_t>(words_per_block_);
    auto shift = [](std::int64_t x) {
      std::int32_t k = 0;
      while ((std::int64_t(1) << k) < x) ++k;
      return (std::int64_t(1) << k) == x ? k : -1;
    };
    s.block_q_shift = shift(shape_.block_q);
    s.block_k_shift = shift(shape_.block_k);
    return s;
  }

  /// The arrays, for copies to other memory spaces: {name, pointer, element count} in a fixed order.
  struct Array {
    const void* data;
    std::size_t bytes;
  };
  std::vector<Array> arrays() const {
    auto a = [](const auto& v) { return Array{v.data(), v.size() * sizeof(v[0])}; };
    return {a(row_ptr_), a(col_idx_), a(partial_row_ptr_), a(partial_col_idx_), a(partial_bits_),
            a(col_ptr_), a(row_idx_), a(partial_col_ptr_), a(partial_row_idx_), a(col_partial_entry_),
            a(block_state_)};
  }

  /// Copies of the arrays in other memory spaces, keyed by the space's name, made on first use.
  struct DeviceCopies {
    std::mutex mutex;
    std::vector<std::pair<std::string, std::shared_ptr<void>>> by_space;
  };
  DeviceCopies& device_copies() const { return *copies_; }

 private:
  explicit BlockMask(const BlockMaskShape& shape) : shape_(shape) {
    auto bad = [](const std::string& w) { throw Error("BlockMask: " + w); };
    if (shape.seqlen_q <= 0 || shape.seqlen_k <= 0) bad("seqlen_q and seqlen_k must be > 0");
    if (shape.block_q <= 0 || shape.block_k <= 0 || shape.block_q % 16 != 0 || shape.block_k % 16 != 0)
      bad("block sizes must be positive multiples of 16 (got block_q " + std::to_string(shape.block_q) +
          ", block_k " + std::to_string(shape.block_k) + ")");
    if (shape.batch < 1 || shape.heads < 1) bad("batch and heads must be >= 1 (1 = broadcast)");
    n_qblocks_ = (shape.seqlen_q + shape.block_q - 1) / shape.block_q;
    n_kblocks_ = (shape.seqlen_k + shape.block_k - 1) / shape.block_k;
    words_per_block_ = (shape.block_q * shape.block_k + 31) / 32;
    if (rows() * n_kblocks_ >= (std::int64_t(1) << 31)) bad("too many blocks (batch * heads * n_qblocks * n_kblocks >= 2^31)");
    row_ptr_.push_back(0);
    partial_row_ptr_.push_back(0);
  }

  std::int64_t rows() const { return shape_.batch * shape_.heads * n_qblocks_; }

  /// Checks one compressed-row list: prefix sums from 0 to its size, sorted indices in range.
  void check_rows(const std::vector<std::int32_t>& ptr, const std::vector<std::int32_t>& idx, const char* what) const {
    auto bad = [&](const std::string& w) { throw Error(std::string("BlockMask: ") + what + ": " + w); };
    if (static_cast<std::int64_t>(ptr.size()) != rows() + 1)
      bad("row pointer has " + std::to_string(ptr.size()) + " entries, expected batch * heads * n_qblocks + 1 = " +
          std::to_string(rows() + 1));
    if (ptr.front() != 0 || static_cast<std::size_t>(ptr.back()) != idx.size())
      bad("row pointer must start at 0 and end at the number of indices (" + std::to_string(idx.size()) + ")");
    for (std::int64_t r = 0; r < rows(); ++r)
      if (ptr[r + 1] < ptr[r]) bad("row pointer decreases at row " + std::to_string(r));
    for (std::int64_t r = 0; r < rows(); ++r) {
      for (std::int32_t e = ptr[r]; e < ptr[r + 1]; ++e) {
        if (idx[e] < 0 || idx[e] >= n_kblocks_)
          bad("key block " + std::to_string(idx[e]) + " in row " + std::to_string(r) + " is out of range [0, " +
              std::to_string(n_kblocks_) + ")");
        if (e > ptr[r] && idx[e] <= idx[e - 1])
          bad("key blocks of row " + std::to_string(r) + " are not strictly increasing");
      }
    }
  }

  /// Validates and builds the column-compressed copy.
  void finish() {
    check_rows(row_ptr_, col_idx_, "full blocks");
    check_rows(partial_row_ptr_, partial_col_idx_, "partial blocks");
    if (partial_bits_.size() != partial_col_idx_.size() * static_cast<std::size_t>(words_per_block_))
      throw Error("BlockMask: partial bits have " + std::to_string(partial_bits_.size()) + " words, expected " +
                  std::to_string(partial_col_idx_.size()) + " partial blocks * " + std::to_string(words_per_block_));
    for (std::int64_t r = 0; r < rows(); ++r)
      for (std::int32_t e = partial_row_ptr_[r]; e < partial_row_ptr_[r + 1]; ++e)
        if (std::binary_search(col_idx_.begin() + row_ptr_[r], col_idx_.begin() + row_ptr_[r + 1], partial_col_idx_[e]))
          throw Error("BlockMask: key block " + std::to_string(partial_col_idx_[e]) + " of row " + std::to_string(r) +
                      " is listed both as full and as partial");
    transpose(row_ptr_, col_idx_, col_ptr_, row_idx_, nullptr);
    transpose(partial_row_ptr_, partial_col_idx_, partial_col_ptr_, partial_row_idx_, &col_partial_entry_);
    // The dense state of every (mask row, key block), for kernels whose tiles differ from the blocks.
    block_state_.assign(static_cast<std::size_t>(rows() * n_kblocks_), detail::block_skipped);
    for (std::int64_t r = 0; r < rows(); ++r) {
      for (std::int32_t e = row_ptr_[r]; e < row_ptr_[r + 1]; ++e) block_state_[r * n_kblocks_ + col_idx_[e]] = detail::block_full;
      for (std::int32_t e = partial_row_ptr_[r]; e < partial_row_ptr_[r + 1]; ++e)
        block_state_[r * n_kblocks_ + partial_col_idx_[e]] = e;
    }
  }

  /// Column-compressed copy: per (mb, mh, key block), the query blocks in increasing order.
  void transpose(const std::vector<std::int32_t>& ptr, const std::vector<std::int32_t>& idx,
                 std::vector<std::int32_t>& cptr, std::vector<std::int32_t>& ridx, std::vector<std::int32_t>* entry) const {
    const std::int64_t groups = shape_.batch * shape_.heads, cols = groups * n_kblocks_;
    cptr.assign(cols + 1, 0);
    for (std::int64_t r = 0; r < rows(); ++r)
      for (std::int32_t e = ptr[r]; e < ptr[r + 1]; ++e) ++cptr[(r / n_qblocks_) * n_kblocks_ + idx[e] + 1];
    std::partial_sum(cptr.begin(), cptr.end(), cptr.begin());
    ridx.assign(idx.size(), 0);
    if (entry) entry->assign(idx.size(), 0);
    std::vector<std::int32_t> fill(cptr.begin(), cptr.end() - 1);
    for (std::int64_t r = 0; r < rows(); ++r)  // rows in increasing order keep each column sorted
      for (std::int32_t e = ptr[r]; e < ptr[r + 1]; ++e) {
        const std::int32_t slot = fill[(r / n_qblocks_) * n_kblocks_ + idx[e]]++;
        ridx[slot] = static_cast<std::int32_t>(r % n_qblocks_);
        if (entry) (*entry)[slot] = e;
      }
  }

  BlockMaskShape shape_;
  std::int64_t n_qblocks_ = 0, n_kblocks_ = 0, words_per_block_ = 0;
  std::vector<std::int32_t> row_ptr_, col_idx_, partial_row_ptr_, partial_col_idx_;
  std::vector<std::uint32_t> partial_bits_;
  std::vector<std::int32_t> col_ptr_, row_idx_, partial_col_ptr_, partial_row_idx_, col_partial_entry_;
  std::vector<std::int32_t> block_state_;  // [mask row][key block]: block_skipped, block_full or a partial entry
  std::shared_ptr<DeviceCopies> copies_ = std::make_shared<DeviceCopies>();
};

}  // namespace kfa
