/* Prefill GEMMs through CLBlast's C API (builds with -Dclblast only): y = x W^T
 * for n > 1 rows, with the temporary buffer CLBlast's indirect kernel needs carved from the
 * cache's device memory, so CLBlast never creates a buffer itself. Decode stays on gemv.cl:
 * CLBlast builds a routine object and a kernel on every call. */
#ifndef DATTN_CL_CLBLAST_GEMM_H
#define DATTN_CL_CLBLAST_GEMM_H

#include "cl_common.h"

/* Bytes of temporary device memory CLBlast needs for y [n][m] (row stride ldy) = x [n][k] (row
 * stride ldx) W^T with W [m][k] packed; 0 when its direct kernel needs none. */
dattn_status clb_temp_bytes(cl_command_queue queue, int n, int m, int k, int ldx, int ldy,
                            size_t *bytes);

/* Enqueues that GEMM, y's first row starting y_off floats into its buffer (a column block of a
 * wider y); temp (NULL when clb_temp_bytes said 0) holds at least that many bytes. */
dattn_status clb_sgemm(cl_command_queue queue, cl_mem x, int ldx, cl_mem w, int m, int k, int n,
                       cl_mem y, size_t y_off, int ldy, cl_mem temp);

#endif
