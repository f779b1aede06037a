#pragma once
// kfa: exact attention, computed IO-aware (FlashAttention), on any Kokkos execution space.
#include "kfa/backward.hpp"
#include "kfa/block_mask.hpp"
#include "kfa/debug.hpp"
#include "kfa/error.hpp"
#include "kfa/forward.hpp"
#include "kfa/kvcache.hpp"
#include "kfa/merge.hpp"
#include "kfa/params.hpp"
#include "kfa/reference.hpp"
#include "kfa/varlen.hpp"
