/* Prefill GEMMs through CLBlast (see clblast_gemm.h). nn.Linear keeps W as [m][k], so in CLBlast's
 * row-major terms C [n][m] = A [n][k] * B^T with B = W (b_transpose = yes). */
#include "clblast_gemm.h"

#include <clblast_c.h>

#include "status.h"

/* CLBlast's codes mirror OpenCL's for OpenCL failures; its own lie below -1000. */
static dattn_status clb_fail(const char *call, CLBlastStatusCode code, int n, int m, int k)
{
    if (code > -1000)
        return dattn_fail(DATTN_E_OPENCL, "opencl: %s (%d x %d x %d): %s", call, n, m, k,
                          cl_error_name((cl_int)code));
    return dattn_fail(DATTN_E_OPENCL, "opencl: %s (%d x %d x %d): CLBlast status %d (see "
                      "CLBlastStatusCode in clblast_c.h); rebuild with -Dclblast=disabled to use "
                      "dattn's own GEMM", call, n, m, k, (int)code);
}

dattn_status clb_temp_bytes(cl_command_queue queue, int n, int m, int k, int ldx, int ldy,
                            size_t *bytes)
{
    *bytes = 0;
    CLBlastStatusCode code = CLBlastSGemmTempBufferSize(
        CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes, (size_t)n, (size_t)m,
        (size_t)k, 0, (size_t)ldx, 0, (size_t)k, 0, (size_t)ldy, &queue, bytes);
    if (code != CLBlastSuccess)
        return clb_fail("CLBlastSGemmTempBufferSize", code, n, m, k);
    return DATTN_OK;
}

dattn_status clb_sgemm(cl_command_queue queue, cl_mem x, int ldx, cl_mem w, int m, int k, int n,
                       cl_mem y, size_t y_off, int ldy, cl_mem temp)
{
    CLBlastStatusCode code = CLBlastSgemmWithTempBuffer(
        CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes, (size_t)n, (size_t)m,
        (size_t)k, 1.0f, x, 0, (size_t)ldx, w, 0, (size_t)k, 0.0f, y, y_off, (size_t)ldy, &queue,
        NULL, temp);
    if (code != CLBlastSuccess)
        return clb_fail("CLBlastSgemmWithTempBuffer", code, n, m, k);
    return DATTN_OK;
}
