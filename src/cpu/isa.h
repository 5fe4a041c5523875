/* Per-ISA symbol names for the CPU kernels (DESIGN §2): the build compiles each kernel file once
 * per instruction set with -DCPU_ISA=<isa>, and CPU_FN(name) gives that copy its own name. */
#ifndef DATTN_CPU_ISA_H
#define DATTN_CPU_ISA_H

#define CPU_CAT_(a, b) a##_##b
#define CPU_CAT(a, b) CPU_CAT_(a, b)
#define CPU_FN(name) CPU_CAT(name, CPU_ISA)   /* gemm_packed -> gemm_packed_avx2 */

#endif
