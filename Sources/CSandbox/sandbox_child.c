#include "hermetic_sandbox.h"

int hermetic_sandbox_abi_version(void) { return 1; }
