/* ORC LLJIT setup shared by the graph compiler and the FMA peak probe. */
#ifndef QUADC_CODEGEN_CG_JIT_H
#define QUADC_CODEGEN_CG_JIT_H

#include <llvm-c/LLJIT.h>

#include "codegen/cg_internal.h"

/* Creates an LLJIT for the target in o, resolving libc from the process
 * and rt_pool_parallel_for by address, and adds mod (consumed) to it.
 * Returns NULL after reporting an error. */
LLVMOrcLLJITRef cg_jit_create(const cg_options *o, LLVMOrcThreadSafeContextRef tsc, LLVMModuleRef mod, ir_diag *d);
/* Compiles on first use and returns the address of `name`, or NULL. */
void *cg_jit_lookup(LLVMOrcLLJITRef jit, const char *name, ir_diag *d);

#endif
