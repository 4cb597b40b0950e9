/* Host-side parts of the int8 GEMM: VNNI detection, the blocking shape
 * per target, weight packing with column sums, and the task count. The
 * kernel itself is emitted by emit_gemm_i8.c. */
#include <string.h>

#include "codegen/gemm_i8.h"

/* LLVM 19 CPU names whose feature set includes avx512vnni. Alder Lake and
 * its successors have only the 256-bit AVX-VNNI, and Knights Mill's
 * avx5124vnniw is a different instruction, so neither is listed. */
static const char *const vnni_cpus[] = {
    "cascadelake", "cooperlake", "icelake-client", "icelake-server", "tigerlake", "rocketlake",
    "sapphirerapids", "emeraldrapids", "graniterapids", "graniterapids-d", "znver4", "znver5",
};

bool cg_target_has_avx512_vnni(LLVMTargetMachineRef tm)
{
    char *features = LLVMGetTargetMachineFeatureString(tm);
    char *cpu = LLVMGetTargetMachineCPU(tm);
    bool has = false;
    if (features && features[0]) {
        has = strstr(features, "+avx512vnni") != NULL;
    } else {
        /* NOTE: a named CPU missing from the list gets the portable path. */
        for (size_t i = 0; i < sizeof vnni_cpus / sizeof *vnni_cpus; i++)
            if (strcmp(cpu, vnni_cpus[i]) == 0)
                has = true;
    }
    LLVMDisposeMessage(features);
    LLVMDisposeMessage(cpu);
    return has;
}

cg_gemm_i8_shape cg_gemm_i8_shape_for(LLVMTargetMachineRef tm, bool allow_vnni)
{
    cg_gemm_i8_shape s;
    int bits = cg_vector_bits(tm);
    s.vw = bits / 32;
    if (allow_vnni && bits >= 512 && cg_target_has_avx512_vnni(tm)) {
        /* 32 registers: 8 x 3 accumulators, 3 B vectors, 1 broadcast. */
        s.isa = CG_GEMM_I8_VNNI;
        s.mr = 8;
        s.nvec = 3;
    } else {
        /* Each vector of columns needs two i32 accumulators of pair sums,
         * so 4 rows x 2 vectors fill 16 of 32 AVX-512 registers and
         * 4 rows x 1 vector fill 8 of 16 AVX2 registers. */
        s.isa = CG_GEMM_I8_PORTABLE;
        s.mr = 4;
        s.nvec = s.vw == 16 ? 2 : 1;
    }
    s.nr = s.nvec * s.vw;
    /* A task's B panels (K x NR bytes each) stream once per MC rows; at
     * K = 3072 one VNNI panel is 144 KiB and stays in L2 while the
     * 16 strips of 8 rows reuse it. */
    s.mc = s.mr * 16;
    s.nc = s.nr * 4;
    return s;
}

static int64_t panels_of(const cg_gemm_i8_shape *s, int64_t n)
{
    return (n + s->nr - 1) / s->nr;
}

int64_t cg_gemm_i8_packed_bytes(const cg_gemm_i8_shape *s, int64_t k, int64_t n)
{
    int64_t groups = (k + 3) / 4;
    return panels_of(s, n) * groups * s->nr * 4;
}

int64_t cg_gemm_i8_colsum_count(const cg_gemm_i8_shape *s, int64_t n)
{
    return panels_of(s, n) * s->nr;
}

void cg_gemm_i8_pack_b(const cg_gemm_i8_shape *s, int64_t k, int64_t n, const int8_t *b, int64_t ldb,
                       bool transposed, int8_t *packed, int32_t *colsum)
{
    int64_t groups = (k + 3) / 4;
    int64_t panels = panels_of(s, n);
    int nr = s->nr;
    memset(packed, 0, (size_t)cg_gemm_i8_packed_bytes(s, k, n));
    memset(colsum, 0, sizeof *colsum * (size_t)(panels * nr));
    for (int64_t p = 0; p < panels; p++) {
        for (int j = 0; j < nr; j++) {
            int64_t col = p * nr + j;
            if (col >= n)
                break;
            int32_t sum = 0;
            for (int64_t kk = 0; kk < k; kk++) {
                int8_t w = transposed ? b[col * ldb + kk] : b[kk * ldb + col];
                int64_t g = kk / 4;
                packed[((p * groups + g) * nr + j) * 4 + kk % 4] = w;
                sum += w;
            }
            colsum[col] = sum;
        }
    }
}
