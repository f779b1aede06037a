#pragma once
// Host stand-in, see hip_runtime.h.
#include "hip_runtime.h"
