/* Throughput of the instructions the AVX2 X25519 kernel is made of, in core cycles per
 * instruction: eight independent vpmuludq / vpaddq / vpsrlq (register operands), a half-and-half
 * mix of vpmuludq and vpaddq, vpmuludq with a memory operand, and 256-bit stores. The cycle is
 * measured first with a chain of dependent one-cycle adds (the TSC does not tick at the core
 * clock in a VM). Each figure is the best of five runs (the VM's other tenants only ever slow
 * a run down). Loop overhead (two instructions per eight) is included.
 * Build and run: cc -O2 -mavx2 perf/micro/avx2_throughput.c -o /tmp/tp && /tmp/tp */
#include <stdint.h>
#include <stdio.h>
#include <x86intrin.h>
#define N 100000000L
#define EIGHT(op, src) \
    op " " src ",%%ymm0,%%ymm1\n" op " " src ",%%ymm0,%%ymm2\n" op " " src ",%%ymm0,%%ymm3\n" \
    op " " src ",%%ymm0,%%ymm4\n" op " " src ",%%ymm0,%%ymm5\n" op " " src ",%%ymm0,%%ymm6\n" \
    op " " src ",%%ymm0,%%ymm7\n" op " " src ",%%ymm0,%%ymm8\n"
#define CLOB "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8"
static uint64_t tsc(void) { unsigned a; return __rdtscp(&a); }
static _Alignas(64) char buf[4096];
int main(void) {
    uint64_t s, x = 1;
    double cyc = 1e9, best;
    for (int r = 0; r < 5; r++) {
        s = tsc();
        for (long i = 0; i < N / 4; i++) __asm__ volatile("add $1,%0\n add $1,%0\n add $1,%0\n add $1,%0\n" : "+r"(x));
        double t = (double)(tsc() - s) / N;
        cyc = t < cyc ? t : cyc;
    }
    printf("one core cycle = %.3f TSC ticks\n", cyc);
#define RUN(name, body, ...)                                                   \
    best = 1e9;                                                                \
    for (int r = 0; r < 5; r++) {                                              \
        s = tsc();                                                             \
        for (long i = 0; i < N / 8; i++) __asm__ volatile(body __VA_ARGS__);   \
        double t = (double)(tsc() - s) / N / cyc;                              \
        best = t < best ? t : best;                                            \
    }                                                                          \
    printf("%-22s %.3f cycles/instruction\n", name, best);
    RUN("vpmuludq", EIGHT("vpmuludq", "%%ymm0"), ::: CLOB)
    RUN("vpaddq", EIGHT("vpaddq", "%%ymm0"), ::: CLOB)
    RUN("vpsrlq $26", EIGHT("vpsrlq", "$26"), ::: CLOB)
    RUN("vpmuludq + vpaddq", "vpmuludq %%ymm0,%%ymm0,%%ymm1\n vpaddq %%ymm0,%%ymm0,%%ymm2\n"
        "vpmuludq %%ymm0,%%ymm0,%%ymm3\n vpaddq %%ymm0,%%ymm0,%%ymm4\n"
        "vpmuludq %%ymm0,%%ymm0,%%ymm5\n vpaddq %%ymm0,%%ymm0,%%ymm6\n"
        "vpmuludq %%ymm0,%%ymm0,%%ymm7\n vpaddq %%ymm0,%%ymm0,%%ymm8\n", ::: CLOB)
    RUN("vpmuludq from memory", "vpmuludq 0(%0),%%ymm0,%%ymm1\n vpmuludq 32(%0),%%ymm0,%%ymm2\n"
        "vpmuludq 64(%0),%%ymm0,%%ymm3\n vpmuludq 96(%0),%%ymm0,%%ymm4\n"
        "vpmuludq 128(%0),%%ymm0,%%ymm5\n vpmuludq 160(%0),%%ymm0,%%ymm6\n"
        "vpmuludq 192(%0),%%ymm0,%%ymm7\n vpmuludq 224(%0),%%ymm0,%%ymm8\n", :: "r"(buf) : "memory", CLOB)
    RUN("256-bit store", "vmovdqa %%ymm0,0(%0)\n vmovdqa %%ymm0,32(%0)\n vmovdqa %%ymm0,64(%0)\n"
        "vmovdqa %%ymm0,96(%0)\n vmovdqa %%ymm0,128(%0)\n vmovdqa %%ymm0,160(%0)\n"
        "vmovdqa %%ymm0,192(%0)\n vmovdqa %%ymm0,224(%0)\n", :: "r"(buf) : "memory")
    return (int)(x & 0);
}
